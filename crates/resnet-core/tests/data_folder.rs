//! Image-folder datasets end to end: a temporary `root/<class>/<image>` tree of generated PNG and
//! JPEG files (odd sizes, grey, RGBA, 16-bit), scanned, decoded, transformed and batched by the
//! loader, checked against direct computations on the pixels that were written.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageBuffer, Rgb, RgbImage, RgbaImage};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet_core::data::folder::{self, encode_image};
use resnet_core::data::{
    Augment, Batch, EvalView, FolderTransform, ImageFolder, Loader, LoaderConfig, Normalize, OnCorrupt, TrainTransform,
};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn rgb(w: u32, h: u32, seed: u64) -> RgbImage {
    RgbImage::from_raw(w, h, noise((w * h * 3) as usize, seed)).unwrap()
}

/// The tree used by most tests, and the raw pixels of the lossless images.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// cat/a.png, 20x27 RGB: shorter side 20, so resize 20 is exact.
    cat_a: RgbImage,
    /// cat/b.png, 37x53 RGB.
    cat_b: RgbImage,
    /// dog/grey.png, 31x23 grey.
    dog_grey: GrayImage,
    /// dog/rgba.PNG, 25x41 RGBA.
    dog_rgba: RgbaImage,
    /// zebra/deep.png, 22x22 16-bit RGB.
    zebra_deep: ImageBuffer<Rgb<u16>, Vec<u16>>,
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imagenet-mini");
    let cat_a = rgb(20, 27, 1);
    let cat_b = rgb(37, 53, 2);
    let dog_grey = GrayImage::from_raw(31, 23, noise(31 * 23, 3)).unwrap();
    let dog_rgba = RgbaImage::from_raw(25, 41, noise(25 * 41 * 4, 4)).unwrap();
    let zebra_deep = ImageBuffer::from_fn(22, 22, |x, y| Rgb([(x * 2900) as u16, (y * 2900) as u16, 40000u16]));
    write(
        &root.join("cat/a.png"),
        &encode_image(cat_a.as_raw(), 20, 27, 3, None).unwrap(),
    );
    write(
        &root.join("cat/b.png"),
        &encode_image(cat_b.as_raw(), 37, 53, 3, None).unwrap(),
    );
    write(&root.join("cat/notes.txt"), b"not an image");
    write(
        &root.join("dog/photo.jpg"),
        &encode_image(rgb(41, 29, 5).as_raw(), 41, 29, 3, Some(90)).unwrap(),
    );
    write(
        &root.join("dog/grey.png"),
        &encode_image(dog_grey.as_raw(), 31, 23, 1, None).unwrap(),
    );
    write(
        &root.join("dog/rgba.PNG"),
        &encode_image(dog_rgba.as_raw(), 25, 41, 4, None).unwrap(),
    );
    write(
        &root.join("dog/nested/gray.jpeg"),
        &encode_image(&noise(33 * 35, 6), 33, 35, 1, Some(80)).unwrap(),
    );
    fs::create_dir_all(root.join("zebra")).unwrap();
    zebra_deep.save(root.join("zebra/deep.png")).unwrap();
    // Ignored: a hidden folder and a loose file at the root.
    write(
        &root.join(".cache/x.png"),
        &encode_image(&[0; 3], 1, 1, 3, None).unwrap(),
    );
    write(&root.join("README.txt"), b"hello");
    Tree {
        _dir: dir,
        root,
        cat_a,
        cat_b,
        dog_grey,
        dog_rgba,
        zebra_deep,
    }
}

fn transform(size: u32, resize: u32) -> FolderTransform {
    FolderTransform {
        size,
        resize,
        train: TrainTransform::RandomResizedCrop,
        view: EvalView::Center,
        on_corrupt: OnCorrupt::Fail,
        workers: 2,
    }
}

fn config(batch_size: usize, augment: bool) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: augment,
        drop_last: false,
        augment: augment.then_some(Augment {
            pad_crop: 0,
            flip: true,
        }),
        normalize: Normalize::identity(3),
        seed: 9,
        shard: resnet_core::data::Shard::ALONE,
    }
}

fn batches(folder: &Arc<ImageFolder>, cfg: &LoaderConfig, t: &FolderTransform, epoch: u64) -> Vec<Batch> {
    Loader::from_folder(folder.clone(), cfg.clone(), t.clone(), epoch)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// Index of `name` (relative to the root) in the folder.
fn index_of(folder: &ImageFolder, name: &str) -> usize {
    folder.paths().iter().position(|p| p.ends_with(name)).unwrap()
}

/// Row `row` of a batch as u8 RGB (the batches here are normalised with mean 0, std 1).
fn row_image(b: &Batch, row: usize) -> RgbImage {
    let [_, c, h, w] = b.shape;
    let plane = h * w;
    let data = &b.images[row * c * plane..(row + 1) * c * plane];
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let at = |ch: usize| (data[ch * plane + y as usize * w + x as usize] * 255.0).round() as u8;
        Rgb([at(0), at(1), at(2)])
    })
}

#[test]
fn scan_finds_classes_in_sorted_order_and_ignores_other_files() {
    let t = tree();
    let f = ImageFolder::scan(&t.root).unwrap();
    assert_eq!(f.class_names(), ["cat", "dog", "zebra"]);
    assert_eq!(f.len(), 7);
    let names: Vec<String> = f
        .paths()
        .iter()
        .map(|p| p.strip_prefix(&t.root).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "cat/a.png",
            "cat/b.png",
            "dog/grey.png",
            "dog/nested/gray.jpeg",
            "dog/photo.jpg",
            "dog/rgba.PNG",
            "zebra/deep.png"
        ]
    );
    assert_eq!(f.labels(), [0, 0, 1, 1, 1, 1, 2]);
    let sub = f.subset(&[6, 0]);
    assert_eq!(sub.labels(), [2, 0]);
    assert_eq!(sub.num_classes(), 3);
}

#[test]
fn scan_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let msg = ImageFolder::scan(&missing).unwrap_err().to_string();
    assert!(
        msg.contains(&*missing.to_string_lossy()) && msg.contains("cannot open"),
        "{msg}"
    );

    let flat = dir.path().join("flat");
    write(&flat.join("a.png"), &encode_image(&[1; 3], 1, 1, 3, None).unwrap());
    let msg = ImageFolder::scan(&flat).unwrap_err().to_string();
    assert!(
        msg.contains(&*flat.to_string_lossy()) && msg.contains("no class folders"),
        "{msg}"
    );
    let msg = ImageFolder::scan(flat.join("a.png")).unwrap_err().to_string();
    assert!(msg.contains("not a folder"), "{msg}");

    let root = dir.path().join("root");
    write(&root.join("good/a.png"), &encode_image(&[1; 3], 1, 1, 3, None).unwrap());
    write(&root.join("empty/readme.txt"), b"no images here");
    let msg = ImageFolder::scan(&root).unwrap_err().to_string();
    assert!(
        msg.contains(&*root.join("empty").to_string_lossy()) && msg.contains("class 'empty' has no images"),
        "{msg}"
    );
}

#[test]
fn center_crop_matches_a_direct_computation() {
    let t = tree();
    let f = Arc::new(ImageFolder::scan(&t.root).unwrap());
    // resize 20: cat/a (20x27) keeps its size, so the crop is of the written pixels: x offset
    // round(4 / 2) = 2, y offset round(11 / 2) = round(5.5) = 6 (half to even, as Python).
    let out = batches(&f, &config(100, false), &transform(16, 20), 0);
    assert_eq!(out.len(), 1);
    let b = &out[0];
    assert_eq!(b.shape, [7, 3, 16, 16]);
    assert_eq!(b.labels, [0, 0, 1, 1, 1, 1, 2]);
    assert_eq!(b.indices, (0..7).collect::<Vec<_>>());
    assert_eq!(b.positions, (0..7).collect::<Vec<_>>());
    let a = index_of(&f, "cat/a.png");
    assert_eq!(row_image(b, a), imageops::crop_imm(&t.cat_a, 2, 6, 16, 16).to_image());

    // Grey: three equal channels; RGBA: alpha dropped; 16-bit: scaled to 8 bits.
    let grey = row_image(b, index_of(&f, "dog/grey.png"));
    // 31x23 -> 26x20 (floor(20 * 31 / 23)), offsets round(5) = 5, round(2) = 2.
    let grey_expected = imageops::resize(&t.dog_grey, 26, 20, FilterType::Triangle);
    for (x, y, p) in grey.enumerate_pixels() {
        let g = grey_expected.get_pixel(x + 5, y + 2)[0];
        assert_eq!(p.0, [g, g, g]);
    }
    let rgba = row_image(b, index_of(&f, "dog/rgba.PNG"));
    let rgb_of_rgba = RgbImage::from_fn(25, 41, |x, y| {
        let p = t.dog_rgba.get_pixel(x, y);
        Rgb([p[0], p[1], p[2]])
    });
    // 25x41 -> 20x32 (floor(20 * 41 / 25) = 32), offsets round(2) = 2, round(8) = 8.
    let resized = imageops::resize(&rgb_of_rgba, 20, 32, FilterType::Triangle);
    assert_eq!(rgba, imageops::crop_imm(&resized, 2, 8, 16, 16).to_image());
    let deep = row_image(b, index_of(&f, "zebra/deep.png"));
    let deep8 = RgbImage::from_fn(22, 22, |x, y| {
        let p = t.zebra_deep.get_pixel(x, y);
        let s = |v: u16| ((v as f32) / 257.0).round() as u8;
        Rgb([s(p[0]), s(p[1]), s(p[2])])
    });
    let resized = imageops::resize(&deep8, 20, 20, FilterType::Triangle);
    let expected = imageops::crop_imm(&resized, 2, 2, 16, 16).to_image();
    for (p, q) in deep.pixels().zip(expected.pixels()) {
        for ch in 0..3 {
            assert!((p[ch] as i32 - q[ch] as i32).abs() <= 1, "{p:?} vs {q:?}");
        }
    }

    // A resize from 37x53: shorter side 24 -> 24x34 (floor(24 * 53 / 37)), crop at (4, 9).
    let b = batches(&f, &config(100, false), &transform(16, 24), 0).remove(0);
    let resized = imageops::resize(&t.cat_b, 24, 34, FilterType::Triangle);
    assert_eq!(
        row_image(&b, index_of(&f, "cat/b.png")),
        imageops::crop_imm(&resized, 4, 9, 16, 16).to_image()
    );

    // Per-channel normalisation: (pixel/255 - mean) / std.
    let mut cfg = config(100, false);
    cfg.normalize = Normalize {
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        pixel_mean: None,
    };
    let n = batches(&f, &cfg, &transform(16, 20), 0).remove(0);
    let px = t.cat_a.get_pixel(2 + 3, 6 + 7);
    let plane = 256;
    let base = a * 3 * plane + 7 * 16 + 3;
    for ch in 0..3 {
        let expected = (px[ch] as f32 / 255.0 - cfg.normalize.mean[ch]) / cfg.normalize.std[ch];
        assert!((n.images[base + ch * plane] - expected).abs() < 1e-5);
    }
}

#[test]
fn ten_crop_geometry_corners_centre_and_mirrors() {
    let t = tree();
    let f = Arc::new(ImageFolder::scan(&t.root).unwrap()).subset(&[0, 1]);
    let f = Arc::new(f);
    let mut tr = transform(16, 20);
    tr.view = EvalView::TenCrop;
    let out = batches(&f, &config(2, false), &tr, 0);
    assert_eq!(out.len(), 1);
    let b = &out[0];
    assert_eq!(b.shape, [20, 3, 16, 16]);
    assert_eq!(b.labels, [0; 20]);
    assert_eq!(b.positions, [vec![0; 10], vec![1; 10]].concat());
    let crop = |img: &RgbImage, x, y| imageops::crop_imm(img, x, y, 16, 16).to_image();
    let mirrored = imageops::flip_horizontal(&t.cat_a);
    // cat/a is 20x27 at resize 20: corners at x in {0, 4}, y in {0, 11}, centre (2, 6).
    let expected = [
        crop(&t.cat_a, 0, 0),
        crop(&t.cat_a, 4, 0),
        crop(&t.cat_a, 0, 11),
        crop(&t.cat_a, 4, 11),
        crop(&t.cat_a, 2, 6),
        crop(&mirrored, 0, 0),
        crop(&mirrored, 4, 0),
        crop(&mirrored, 0, 11),
        crop(&mirrored, 4, 11),
        crop(&mirrored, 2, 6),
    ];
    for (v, e) in expected.iter().enumerate() {
        assert_eq!(&row_image(b, v), e, "view {v}");
    }
    // The mirrored top-left is the top-right crop mirrored.
    assert_eq!(row_image(b, 5), imageops::flip_horizontal(&row_image(b, 1)));
    // The second image's views follow.
    let resized = imageops::resize(&t.cat_b, 20, 28, FilterType::Triangle);
    assert_eq!(row_image(b, 10), crop(&resized, 0, 0));
    assert_eq!(row_image(b, 13), crop(&resized, 4, 12));
}

#[test]
fn full_image_views_are_batches_of_one_per_scale() {
    let t = tree();
    let f = Arc::new(ImageFolder::scan(&t.root).unwrap().subset(&[1, 0]));
    let mut tr = transform(16, 20);
    tr.view = EvalView::FullImage { scales: vec![20, 30] };
    let loader = Loader::from_folder(f.clone(), config(64, false), tr.clone(), 0).unwrap();
    assert_eq!(loader.len(), 4);
    let out: Vec<Batch> = loader.map(|b| b.unwrap()).collect();
    let shapes: Vec<[usize; 4]> = out.iter().map(|b| b.shape).collect();
    // cat/b 37x53 at 20 -> 20x28 and at 30 -> 30x42; cat/a 20x27 -> 20x27 and 30x40.
    assert_eq!(shapes, [[1, 3, 28, 20], [1, 3, 42, 30], [1, 3, 27, 20], [1, 3, 40, 30]]);
    assert_eq!(out.iter().map(|b| b.positions[0]).collect::<Vec<_>>(), [0, 0, 1, 1]);
    assert_eq!(out[2].indices, [1]);
    assert_eq!(row_image(&out[2], 0), t.cat_a);
}

#[test]
fn training_batches_repeat_for_a_seed_and_epoch_and_change_with_the_epoch() {
    let t = tree();
    let f = Arc::new(ImageFolder::scan(&t.root).unwrap());
    for train in [
        TrainTransform::RandomResizedCrop,
        TrainTransform::ScaleAugment { min: 16, max: 30 },
        TrainTransform::CenterCrop,
    ] {
        let mut tr = transform(16, 20);
        tr.train = train.clone();
        let cfg = config(3, true);
        let a = batches(&f, &cfg, &tr, 1);
        let b = batches(&f, &cfg, &tr, 1);
        assert_eq!(a.iter().map(|b| b.shape[0]).collect::<Vec<_>>(), [3, 3, 1]);
        let bits = |v: &[Batch]| {
            v.iter()
                .flat_map(|b| b.images.iter().map(|f| f.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&a), bits(&b), "{train:?}");
        assert_eq!(a[0].shape, [3, 3, 16, 16]);
        // Independent of the batch size and of the number of threads.
        let mut one = tr.clone();
        one.workers = 1;
        let whole = batches(&f, &config(7, true), &one, 1);
        assert_eq!(bits(&a), bits(&whole), "{train:?}");
        let c = batches(&f, &cfg, &tr, 2);
        assert_ne!(bits(&a), bits(&c), "{train:?}");
        // Labels follow the shuffled indices.
        for b in &a {
            for (k, &i) in b.indices.iter().enumerate() {
                assert_eq!(b.labels[k], f.labels()[i] as i32);
            }
        }
    }
}

#[test]
fn random_resized_crop_box_stays_inside_and_follows_torchvision_ranges() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (w, h) = (500u32, 375u32);
    let mut fractions = Vec::new();
    for _ in 0..2000 {
        let (x, y, cw, ch) = folder::random_resized_crop_box(w, h, &mut rng);
        assert!(cw >= 1 && ch >= 1 && x + cw <= w && y + ch <= h);
        let ratio = cw as f64 / ch as f64;
        assert!((0.70..=1.40).contains(&ratio), "{ratio}");
        fractions.push((cw * ch) as f64 / (w * h) as f64);
    }
    let min = fractions.iter().cloned().fold(1.0, f64::min);
    let max = fractions.iter().cloned().fold(0.0, f64::max);
    assert!(min < 0.1 && max > 0.9, "{min} {max}");
    // A 1x40 strip can never hold a 3/4..4/3 crop of 8% or more: the centred fallback, the full
    // width and height round(1 / (3/4)) = 1.
    assert_eq!(folder::random_resized_crop_box(1, 40, &mut rng), (0, 19, 1, 1));
}

#[test]
fn corrupt_files_fail_naming_the_path_or_are_skipped_and_reported() {
    let t = tree();
    let broken = t.root.join("dog/broken.jpg");
    write(&broken, b"\xff\xd8\xff\xe0 this is not really a jpeg");
    let f = Arc::new(ImageFolder::scan(&t.root).unwrap());
    assert_eq!(f.len(), 8);

    let mut tr = transform(16, 20);
    let mut loader = Loader::from_folder(f.clone(), config(3, false), tr.clone(), 0).unwrap();
    let mut error = None;
    for b in loader.by_ref() {
        if let Err(e) = b {
            error = Some(e.to_string());
        }
    }
    let msg = error.expect("the corrupt file did not fail the loader");
    assert!(msg.contains(&*broken.to_string_lossy()), "{msg}");
    assert!(msg.contains("cannot decode"), "{msg}");
    assert!(loader.next_batch().is_none());
    assert!(f.skipped().is_empty());

    tr.on_corrupt = OnCorrupt::Skip;
    for augment in [false, true] {
        let out = batches(&f, &config(3, augment), &tr, 0);
        let rows: usize = out.iter().map(|b| b.shape[0]).sum();
        assert_eq!(rows, 7);
        let bad = index_of(&f, "dog/broken.jpg");
        assert!(out.iter().all(|b| !b.indices.contains(&bad)));
    }
    let skipped = f.skipped();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].path, broken);
    assert!(skipped[0].reason.contains("cannot decode"), "{}", skipped[0].reason);

    // A batch made only of corrupt files is left out; the epoch then ends early, cleanly.
    let only = Arc::new(f.subset(&[index_of(&f, "dog/broken.jpg"), 0]));
    let out = batches(&only, &config(1, false), &tr, 0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].indices, [1]);
}

#[test]
fn rejects_bad_transforms() {
    let t = tree();
    let f = Arc::new(ImageFolder::scan(&t.root).unwrap());
    let bad =
        |tr: FolderTransform, cfg: LoaderConfig| Loader::from_folder(f.clone(), cfg, tr, 0).err().unwrap().to_string();
    assert!(bad(transform(32, 16), config(2, false)).contains("resize (16) must be at least size (32)"));
    let mut tr = transform(16, 20);
    tr.train = TrainTransform::ScaleAugment { min: 10, max: 30 };
    assert!(bad(tr, config(2, true)).contains("scaleAugment"));
    let mut tr = transform(16, 20);
    tr.view = EvalView::FullImage { scales: vec![] };
    assert!(bad(tr, config(2, false)).contains("at least one scale"));
    let mut cfg = config(2, true);
    cfg.augment = Some(Augment::paper());
    assert!(bad(transform(16, 20), cfg).contains("pad_crop"));
    let mut cfg = config(2, false);
    cfg.normalize = Normalize::identity(1);
    assert!(bad(transform(16, 20), cfg).contains("3 channels"));
}
