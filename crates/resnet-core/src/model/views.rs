//! Multi-view evaluation (He et al. 2015, sec. 3.4): the softmax probabilities of an image's
//! views (ten crops, several scales) are averaged, and loss and top-1/top-5 are taken on the
//! average. The views of one image may span batches (a `fullImage` view is a batch of its own), so
//! the score is kept across calls until `finish`.

use crate::error::{Error, Result};

use super::train::EvalStats;
use super::Model;

/// The running score of a multi-view evaluation.
#[derive(Debug, Default)]
pub struct ViewScore {
    /// The image whose views are being summed: its epoch position, label and probability sums.
    current: Option<Image>,
    done: EvalStats,
}

#[derive(Debug)]
struct Image {
    position: usize,
    label: usize,
    sums: Vec<f64>,
    views: usize,
}

impl ViewScore {
    pub fn new() -> Self {
        ViewScore::default()
    }

    /// Adds the views of one batch: `logits` [rows, classes], a label and an epoch position per
    /// row (consecutive rows of one position are the views of one image). Without positions every
    /// row is an image of its own.
    pub fn add(&mut self, logits: &[f32], labels: &[i32], positions: &[usize]) -> Result<()> {
        let rows = labels.len();
        if rows == 0 {
            return Ok(());
        }
        if !logits.len().is_multiple_of(rows) || (!positions.is_empty() && positions.len() != rows) {
            return Err(Error::invalid(format!(
                "multi-view evaluation: {} logits, {rows} labels and {} positions do not fit",
                logits.len(),
                positions.len()
            )));
        }
        let classes = logits.len() / rows;
        for (r, row) in logits.chunks(classes).enumerate() {
            let next = self.current.as_ref().map_or(0, |image| image.position + 1);
            let position = positions.get(r).copied().unwrap_or(next);
            if self.current.as_ref().is_none_or(|image| image.position != position) {
                self.finish_image();
                self.current = Some(Image {
                    position,
                    label: labels[r].max(0) as usize,
                    sums: vec![0.0; classes],
                    views: 0,
                });
            }
            let image = self.current.as_mut().expect("an image was just started");
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            for (sum, &v) in image.sums.iter_mut().zip(row) {
                *sum += (v as f64 - max).exp() / z;
            }
            image.views += 1;
        }
        Ok(())
    }

    /// Images scored so far; the one whose views are being summed is not yet.
    pub fn scored(&self) -> usize {
        self.done.count
    }

    /// Scores the image whose views were summed last, and returns the sums over every image.
    pub fn finish(&mut self) -> EvalStats {
        self.finish_image();
        self.done.clone()
    }

    fn finish_image(&mut self) {
        let Some(image) = self.current.take() else {
            return;
        };
        if image.views == 0 {
            return;
        }
        let p = image.sums.get(image.label).copied().unwrap_or(0.0);
        let above = image.sums.iter().filter(|&&v| v > p).count();
        self.done.loss_sum += -(p / image.views as f64).max(1e-30).ln();
        self.done.top1 += usize::from(above == 0);
        self.done.top5 += usize::from(above < 5);
        self.done.count += 1;
    }
}

impl Model {
    /// The logits of a batch of views (eval mode) added to `score` (see [`ViewScore::add`]).
    pub fn score_views(
        &self,
        images: &[f32],
        shape: [usize; 4],
        labels: &[i32],
        positions: &[usize],
        score: &mut ViewScore,
    ) -> Result<()> {
        let logits = self.predict(images, shape)?;
        score.add(&logits, labels, positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_views_of_an_image_across_batches() {
        let mut score = ViewScore::new();
        // Image 0: two views split over two batches, each confident in a different class, so the
        // average is 50/50 between classes 0 and 1; image 1: one view sure of class 1 (its label).
        score.add(&[10.0, -10.0], &[0], &[0]).unwrap();
        assert_eq!(score.scored(), 0, "image 0 may have more views");
        score.add(&[-10.0, 10.0, -10.0, 10.0], &[0, 1], &[0, 1]).unwrap();
        assert_eq!(score.scored(), 1);
        let s = score.finish();
        assert_eq!((s.count, s.top1, s.top5), (2, 2, 2), "{s:?}");
        let expected = -(0.5f64).ln() - (1.0 / (1.0 + (-20f64).exp())).ln();
        assert!((s.loss_sum - expected).abs() < 1e-9, "{} vs {expected}", s.loss_sum);
    }

    #[test]
    fn rows_without_positions_are_images_of_their_own() {
        let mut score = ViewScore::new();
        score.add(&[1.0, 0.0, 0.0, 1.0, 1.0, 0.0], &[0, 0, 0], &[]).unwrap();
        let s = score.finish();
        assert_eq!((s.count, s.top1), (3, 2));
        assert!(score.add(&[1.0, 0.0, 0.0], &[0, 0], &[]).is_err());
    }
}
