//! Data-parallel training against one process: ranks are threads joined by the in-process
//! transport (the same `Communicator`, reducer and synchronised batch norm MPI ranks use). Two
//! ranks splitting each batch must train like one process on the whole batch when batch norm is
//! off or synchronised, and hold bit-identical parameters whatever their batch norm does.

mod common;
mod harness;

use std::sync::Arc;
use std::time::Duration;

use common::batch;
use resnet_core::distributed::local::LocalTransport;
use resnet_core::distributed::{Communicator, Transport};
use resnet_core::model::DataParallelOptions;
use resnet_core::nn::{ResNetSpec, ShortcutOption};
use resnet_core::{Device, Model};

const SEED: u64 = 5;
const CLASSES: usize = 10;

fn tiny_net(batch_norm: bool) -> ResNetSpec {
    ResNetSpec::cifar(8, ShortcutOption::B, false, 3, CLASSES)
        .unwrap()
        .with_batch_norm(batch_norm)
}

/// Every parameter and buffer, by name.
fn state(model: &Model) -> Vec<(String, Vec<f32>)> {
    model
        .state_dict()
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.data {
            resnet_core::io::checkpoint::TensorData::F32(v) => Some((t.name, v)),
            _ => None,
        })
        .collect()
}

/// One process: `steps` steps on the whole of each batch.
fn train_alone(dev: Device, spec: &ResNetSpec, batches: &[(Vec<f32>, [usize; 4], Vec<i32>)]) -> Model {
    let mut model = Model::new(spec.clone(), SEED, dev).unwrap();
    for (images, shape, labels) in batches {
        model.train_step(images, *shape, labels).unwrap();
    }
    model
}

/// `ranks` threads, each training on its rows `split[r]..split[r+1]` of every batch. Returns each
/// rank's model and the losses each step reported.
fn train_ranks(
    dev: Device,
    specs: Vec<ResNetSpec>,
    options: DataParallelOptions,
    batches: Vec<(Vec<f32>, [usize; 4], Vec<i32>)>,
    split: Vec<usize>,
) -> Vec<resnet_core::Result<(Model, Vec<f32>)>> {
    let batches = Arc::new(batches);
    let threads: Vec<_> = LocalTransport::group(specs.len())
        .into_iter()
        .zip(specs)
        .enumerate()
        .map(|(rank, (transport, spec))| {
            let (batches, split, options) = (batches.clone(), split.clone(), options.clone());
            std::thread::spawn(move || -> resnet_core::Result<(Model, Vec<f32>)> {
                let comm = Communicator::start(
                    move || Ok(Box::new(transport) as Box<dyn Transport>),
                    Duration::from_secs(60),
                )?;
                // Rank-dependent seeds: attaching must hand every rank rank 0's weights.
                let mut model = Model::new(spec, SEED + rank as u64 * 100, dev)?;
                model.attach_data_parallel(Arc::new(comm), options)?;
                let mut losses = Vec::new();
                for (images, shape, labels) in batches.iter() {
                    let (from, to) = (split[rank], split[rank + 1]);
                    let per = shape[1] * shape[2] * shape[3];
                    let stats = model.train_step(
                        &images[from * per..to * per],
                        [to - from, shape[1], shape[2], shape[3]],
                        &labels[from..to],
                    )?;
                    assert_eq!(stats.batch, shape[0], "the step reports the global batch");
                    losses.push(stats.loss);
                }
                Ok((model, losses))
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a rank panicked"))
        .collect()
}

fn batches(n: usize, steps: usize) -> Vec<(Vec<f32>, [usize; 4], Vec<i32>)> {
    (0..steps).map(|s| batch(100 + s as u64, n, 3, 8, CLASSES)).collect()
}

/// Per tensor, |a - b| / |b| (Euclidean norms) at most `tol`.
fn assert_states_close(got: &Model, want: &Model, tol: f64, what: &str) {
    for ((name, a), (_, b)) in state(got).iter().zip(state(want).iter()) {
        let diff: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
        assert!(
            diff <= tol * norm.max(1e-12),
            "{what}: {name} differs by {diff:e} (norm {norm:e}, relative {:e})",
            diff / norm
        );
    }
}

fn assert_ranks_identical(ranks: &[(Model, Vec<f32>)]) {
    let first = state(&ranks[0].0);
    for (r, (model, losses)) in ranks.iter().enumerate().skip(1) {
        for ((name, a), (_, b)) in state(model).iter().zip(&first) {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "rank {r} holds a different {name} from rank 0"
            );
        }
        assert_eq!(losses, &ranks[0].1, "rank {r} reports different global losses");
    }
}

fn equivalence(dev: Device, spec: ResNetSpec, options: DataParallelOptions, split: Vec<usize>) {
    let data = batches(*split.last().unwrap(), 5);
    let alone = train_alone(dev, &spec, &data);
    let ranks: Vec<_> = train_ranks(dev, vec![spec.clone(); split.len() - 1], options, data, split)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_ranks_identical(&ranks);
    assert_states_close(&ranks[0].0, &alone, 1e-5, "2 ranks vs 1 process");
    assert_eq!(ranks[0].0.step(), alone.step());
}

fn without_batch_norm_two_ranks_train_like_one_process(dev: Device) {
    equivalence(dev, tiny_net(false), DataParallelOptions::default(), vec![0, 16, 32]);
}

fn uneven_shares_without_overlap_train_like_one_process(dev: Device) {
    let options = DataParallelOptions {
        overlap: false,
        bucket_cap_bytes: 4096,
        ..DataParallelOptions::default()
    };
    equivalence(dev, tiny_net(false), options, vec![0, 13, 32]);
}

fn synchronised_batch_norm_trains_like_one_process(dev: Device) {
    let options = DataParallelOptions {
        sync_batch_norm: true,
        bucket_cap_bytes: 16 << 10,
        ..DataParallelOptions::default()
    };
    equivalence(dev, tiny_net(true), options.clone(), vec![0, 16, 32]);
    equivalence(dev, tiny_net(true), options, vec![0, 5, 11, 32]);
}

fn per_rank_batch_norm_keeps_every_rank_identical(dev: Device) {
    let data = batches(16, 20);
    let ranks: Vec<_> = train_ranks(
        dev,
        vec![tiny_net(true); 2],
        DataParallelOptions::default(),
        data,
        vec![0, 7, 16],
    )
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert_ranks_identical(&ranks);
    assert_eq!(ranks[1].0.step(), 20);
}

fn ranks_that_build_different_models_are_refused() {
    let data = batches(8, 1);
    let specs = vec![tiny_net(true), tiny_net(false)];
    for (rank, result) in train_ranks(Device::Cpu, specs, DataParallelOptions::default(), data, vec![0, 4, 8])
        .into_iter()
        .enumerate()
    {
        let err = result
            .err()
            .unwrap_or_else(|| panic!("rank {rank} was not refused"))
            .to_string();
        assert!(err.contains("rank(s) 1 differ from rank 0"), "rank {rank}: {err}");
    }
}

/// Random values around `offset`, so batch norm has a mean to remove.
fn values(n: usize, seed: u64, offset: f32) -> Vec<f32> {
    batch(seed, n, 1, 1, 2).0.into_iter().map(|v| offset + v).collect()
}

/// Batch norm over rows `rows` of `x` (one rank's share, or all of it alone), then
/// sum(y * r): returns y, dx, dgamma, dbeta and the running statistics after.
type BnResult = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn batch_norm_pass(
    dev: Device,
    (x, r): (&[f32], &[f32]),
    shape: [usize; 4],
    rows: std::ops::Range<usize>,
    sync: Option<&Arc<Communicator>>,
) -> BnResult {
    use resnet_core::nn::BnMode;
    use resnet_core::ops::{self, BatchNormArgs};
    use resnet_core::Tensor;
    let per = shape[1] * shape[2] * shape[3];
    let c = shape[1];
    let part = [rows.len(), shape[1], shape[2], shape[3]];
    let xs = Tensor::parameter(&x[rows.start * per..rows.end * per], &part, dev).unwrap();
    let gamma = Tensor::parameter(&values(c, 7, 1.0), &[c], dev).unwrap();
    let beta = Tensor::parameter(&values(c, 8, 0.0), &[c], dev).unwrap();
    let rm = Tensor::from_vec(&vec![0.0; c], &[c], dev).unwrap();
    let rv = Tensor::from_vec(&vec![1.0; c], &[c], dev).unwrap();
    let args = BatchNormArgs {
        gamma: &gamma,
        beta: &beta,
        running_mean: &rm,
        running_var: &rv,
        mode: BnMode::Train,
        sync,
        momentum: 0.1,
        eps: 1e-5,
    };
    let y = ops::batch_norm2d(&xs, &args).unwrap();
    let n = rows.len() * per;
    let rt = Tensor::from_vec(&r[rows.start * per..rows.end * per], &[1, n], dev).unwrap();
    ops::linear(&ops::reshape(&y, &[1, n]).unwrap(), &rt, None)
        .unwrap()
        .backward()
        .unwrap();
    let grad = |t: &Tensor| t.grad().unwrap().to_vec().unwrap();
    (
        y.to_vec().unwrap(),
        grad(&xs),
        grad(&gamma),
        grad(&beta),
        rm.to_vec().unwrap(),
        rv.to_vec().unwrap(),
    )
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 2e-5 * (1.0 + b.abs()), "{what}[{i}]: {a} vs {b}");
    }
}

/// Synchronised batch norm on three ranks of uneven shares gives, forward and backward, what
/// batch norm gives on the whole batch in one process (whose backward the gradient checks prove):
/// the output and data gradient row for row, the parameters' gradients once summed over ranks
/// (the reducer's job), the running statistics on every rank.
fn synchronised_batch_norm_equals_the_whole_batch(dev: Device) {
    let shape = [7, 3, 5, 3];
    let len = shape.iter().product();
    let (x, r) = (values(len, 1, 3.0), values(len, 2, 0.0));
    let alone = batch_norm_pass(dev, (&x, &r), shape, 0..7, None);
    let split = [0, 1, 4, 7];
    let (x, r) = (Arc::new(x), Arc::new(r));
    let ranks: Vec<BnResult> = LocalTransport::group(3)
        .into_iter()
        .enumerate()
        .map(|(rank, transport)| {
            let (x, r) = (x.clone(), r.clone());
            std::thread::spawn(move || {
                let comm = Arc::new(
                    Communicator::start(
                        move || Ok(Box::new(transport) as Box<dyn Transport>),
                        Duration::from_secs(60),
                    )
                    .unwrap(),
                );
                batch_norm_pass(dev, (&x, &r), shape, split[rank]..split[rank + 1], Some(&comm))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("a rank panicked"))
        .collect();
    let concat = |f: fn(&BnResult) -> &Vec<f32>| ranks.iter().flat_map(|r| f(r).clone()).collect::<Vec<f32>>();
    assert_close(&concat(|r| &r.0), &alone.0, "output");
    assert_close(&concat(|r| &r.1), &alone.1, "dx");
    let sum = |f: fn(&BnResult) -> &Vec<f32>| {
        (0..shape[1])
            .map(|c| ranks.iter().map(|r| f(r)[c]).sum::<f32>())
            .collect::<Vec<f32>>()
    };
    assert_close(&sum(|r| &r.2), &alone.2, "dgamma summed over ranks");
    assert_close(&sum(|r| &r.3), &alone.3, "dbeta summed over ranks");
    for (rank, got) in ranks.iter().enumerate() {
        assert_close(&got.4, &alone.4, &format!("rank {rank}: running mean"));
        assert_close(&got.5, &alone.5, &format!("rank {rank}: running var"));
    }
}

/// A check run once per device.
type DeviceCase = (&'static str, fn(Device));

fn main() {
    let on_each_device: [DeviceCase; 5] = [
        (
            "without_batch_norm_two_ranks_train_like_one_process",
            without_batch_norm_two_ranks_train_like_one_process,
        ),
        (
            "uneven_shares_without_overlap_train_like_one_process",
            uneven_shares_without_overlap_train_like_one_process,
        ),
        (
            "synchronised_batch_norm_trains_like_one_process",
            synchronised_batch_norm_trains_like_one_process,
        ),
        (
            "per_rank_batch_norm_keeps_every_rank_identical",
            per_rank_batch_norm_keeps_every_rank_identical,
        ),
        (
            "synchronised_batch_norm_equals_the_whole_batch",
            synchronised_batch_norm_equals_the_whole_batch,
        ),
    ];
    let mut cases: Vec<_> = on_each_device
        .into_iter()
        .flat_map(|(name, test)| harness::each_device(name, test))
        .collect();
    cases.push(harness::cpu(
        "ranks_that_build_different_models_are_refused",
        ranks_that_build_different_models_are_refused,
    ));
    harness::run(cases)
}
