//! The register-tiled GEMM shared by the dense matmul and the three convolutions
//! (gemm_tile.wgsl): the tile shape for a given M, the split-K decision, and the launch that
//! sums split-K partials with reduce.wgsl. Also the matmul family itself (matmul.wgsl).

use super::uniform::Uniform;
use super::{elementwise, output, read, read_write, reduce, to_u32, uniform, Family};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::error::{Error, Result};
use crate::precision::Precision;

/// The shared GEMM loops, register-tiled and on cooperative matrices, and, for families whose
/// reduction cursor is plain k, its cursors.
pub const TILE_LOOP: &str = concat!(include_str!("gemm_stage.wgsl"), include_str!("gemm_tile.wgsl"));
pub const COOP_LOOP: &str = concat!(include_str!("gemm_stage.wgsl"), include_str!("gemm_coop.wgsl"));
pub const PLAIN_K: &str = include_str!("gemm_plain_k.wgsl");

/// A GEMM family built twice, on the register-tiled loop (gemm_tile.wgsl) and on the
/// cooperative-matrix loop (gemm_coop.wgsl): the same hooks, parameters and buffers.
pub struct GemmFamily<P> {
    pub tiled: Family<P>,
    pub coop: Family<P>,
}

impl<P: Uniform> GemmFamily<P> {
    pub const fn new(
        name: &'static str,
        coop_name: &'static str,
        buffers: &'static [super::Buffer],
        sources: &'static [&'static str],
    ) -> Self {
        GemmFamily {
            tiled: Family::with_tail(name, buffers, sources, TILE_LOOP),
            coop: Family::with_tail(coop_name, buffers, sources, COOP_LOOP),
        }
    }
}

/// The fields every GEMM family's parameter block starts with, in this order: gemm_tile.wgsl
/// reads them as `P.m`, `P.n`, `P.k`, `P.splits`, `P.k_chunk`.
const GEMM_FIELDS: [&str; 5] = ["m", "n", "k", "splits", "k_chunk"];

/// String equality for const contexts (`==` on `str` is not const).
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `fields` begin with [`GEMM_FIELDS`], as u32s; const, so [`run`] checks it at compile time.
const fn begins_as_gemm(fields: &[(&str, &str)]) -> bool {
    if fields.len() < GEMM_FIELDS.len() {
        return false;
    }
    let mut i = 0;
    while i < GEMM_FIELDS.len() {
        if !same(fields[i].0, GEMM_FIELDS[i]) || !same(fields[i].1, "u32") {
            return false;
        }
        i += 1;
    }
    true
}

/// The GEMM a launch covers and how its reduction is split.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub splits: u32,
    pub k_chunk: u32,
}

/// The tile shape of a GEMM, chosen by the size of M (small channel counts get flat tiles).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tile {
    bm: u32,
    bn: u32,
    bk: u32,
    tm: u32,
    tn: u32,
    prefetch: bool,
    /// Set for the cooperative-matrix loop: the subgroup size it runs with.
    coop: Option<u32>,
}

/// Tuning override for experiments: `RESNET_WGPU_GEMM=bm,bn,bk,tm,tn,prefetch(0/1)` for every GEMM.
fn tile_override() -> Option<Tile> {
    static TILE: std::sync::OnceLock<Option<Tile>> = std::sync::OnceLock::new();
    *TILE.get_or_init(|| {
        let v: Vec<u32> = std::env::var("RESNET_WGPU_GEMM")
            .ok()?
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        let t = Tile {
            bm: *v.first()?,
            bn: *v.get(1)?,
            bk: *v.get(2)?,
            tm: *v.get(3)?,
            tn: *v.get(4)?,
            prefetch: v.get(5) != Some(&0),
            coop: None,
        };
        // gemm_tile.wgsl assumes 256 threads and BM, BN, BK dividing the thread count.
        let divides_256 = |x: u32| x > 0 && 256u32.is_multiple_of(x);
        let ok = t.tm > 0
            && t.tn > 0
            && t.bm.is_multiple_of(t.tm)
            && t.bn.is_multiple_of(t.tn)
            && (t.bm / t.tm) * (t.bn / t.tn) == 256
            && divides_256(t.bm)
            && divides_256(t.bn)
            && divides_256(t.bk);
        if !ok {
            eprintln!("resnet-wgpu: ignoring RESNET_WGPU_GEMM={v:?} (needs 256 threads; BM, BN, BK dividing 256)");
        }
        ok.then_some(t)
    })
}

fn tile_for(m: usize) -> Tile {
    if let Some(t) = tile_override() {
        return t;
    }
    // Measured on an H100 (NVIDIA Vulkan driver): 64x128 tiles of 4x8 a thread run every ResNet-50
    // convolution at 19-22 TFLOP/s; 128x128 tiles of 8x8 fall off a cliff (~2 TFLOP/s) in the
    // forward kernel there, so they are not used.
    match m {
        m if m > 32 => Tile {
            bm: 64,
            bn: 128,
            bk: 8,
            tm: 4,
            tn: 8,
            prefetch: true,
            coop: None,
        },
        m if m > 16 => Tile {
            bm: 32,
            bn: 128,
            bk: 8,
            tm: 2,
            tn: 8,
            prefetch: true,
            coop: None,
        },
        _ => Tile {
            bm: 16,
            bn: 256,
            bk: 8,
            tm: 2,
            tn: 8,
            prefetch: true,
            coop: None,
        },
    }
}

/// gemm_coop.wgsl's tile (its BM, BN, BK): the tiled loop's for M > 32, stepped 32 along K.
const COOP_BM: u32 = 64;
const COOP_BN: u32 = 128;
const COOP_BK: u32 = 32;

/// Workgroup memory gemm_coop.wgsl needs: the f16 A and B tiles and its 8 subgroups' 16x16 f32
/// scratches.
pub const COOP_WORKGROUP_BYTES: u32 = (COOP_BM + COOP_BN) * COOP_BK * 2 + 8 * 256 * 4;

/// Cleared by `use_tensor_cores(false)`.
static TENSOR_CORES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

pub fn tensor_cores_on() -> bool {
    TENSOR_CORES.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn set_tensor_cores(on: bool) {
    TENSOR_CORES.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The tile of a launch: the cooperative-matrix loop's for precision 'mixed' on an adapter that
/// has it (gemm_coop.wgsl), where M > 32 so that its 64 x 128 output tile is the tiled loop's too
/// (the split-K decisions, and so [`unsplit`], stay the same); `tile_for` otherwise.
fn launch_tile(ctx: &GpuContext, m: usize, precision: Precision) -> Tile {
    match ctx.cooperative_subgroup {
        Some(sg) if precision == Precision::Mixed && m > 32 && tile_override().is_none() && tensor_cores_on() => Tile {
            bm: COOP_BM,
            bn: COOP_BN,
            bk: COOP_BK,
            tm: 0,
            tn: 0,
            prefetch: true,
            coop: Some(sg),
        },
        _ => tile_for(m),
    }
}

impl Tile {
    fn consts(&self) -> Vec<(&'static str, String)> {
        if let Some(sg) = self.coop {
            return vec![
                ("BM", self.bm.to_string()),
                ("BN", self.bn.to_string()),
                ("BK", self.bk.to_string()),
                ("SG", sg.to_string()),
            ];
        }
        vec![
            ("BM", self.bm.to_string()),
            ("BN", self.bn.to_string()),
            ("BK", self.bk.to_string()),
            ("TM", self.tm.to_string()),
            ("TN", self.tn.to_string()),
            ("PREFETCH", self.prefetch.to_string()),
        ]
    }

    fn tiles(&self, m: usize, n: usize) -> u64 {
        (m as u64).div_ceil(self.bm as u64) * (n as u64).div_ceil(self.bn as u64)
    }
}

/// How many ways to split a reduction of `k` so that `tiles` output tiles fill the GPU, keeping
/// at least `MIN_CHUNK` of k a split and the partials under `MAX_PARTIAL` floats.
fn split_k(tiles: u64, k: usize, bk: u32, out_len: usize) -> (usize, usize) {
    const TARGET_WORKGROUPS: u64 = 768;
    const MIN_CHUNK: usize = 256;
    const MAX_PARTIAL: usize = 1 << 25;
    let by_fill = (TARGET_WORKGROUPS / tiles.max(1)).max(1) as usize;
    let by_chunk = k.div_ceil(MIN_CHUNK).max(1);
    let by_memory = (MAX_PARTIAL / out_len.max(1)).max(1);
    let splits = by_fill.min(by_chunk).min(by_memory).max(1);
    let bk = bk as usize;
    let chunk = k.div_ceil(splits).div_ceil(bk) * bk;
    let chunk = chunk.max(bk);
    (k.div_ceil(chunk).max(1), chunk)
}

/// One GEMM launch of a family: its (m, n, k), the family's own `const` variant (the tile shape
/// is added here), the named inputs, and the named output of `output_len` floats.
pub struct Gemm<'a> {
    pub mnk: (usize, usize, usize),
    pub variant: Vec<(&'static str, String)>,
    pub inputs: &'a [(&'a str, &'a GpuStorage)],
    pub output: &'static str,
    pub output_len: usize,
    /// `Mixed`: both operands are rounded to f16 in the tiles (the products and sums stay f32).
    pub precision: Precision,
}

/// Whether the adapter can run the mixed-precision GEMMs (f16 in shaders); the error says what
/// it lacks.
pub fn check_half(ctx: &GpuContext) -> Result<()> {
    if ctx.features.contains(wgpu::Features::SHADER_F16) {
        return Ok(());
    }
    Err(Error::Device(format!(
        "precision 'mixed' needs half-precision shaders (wgpu's SHADER_F16), which {} does not offer; \
         use precision 'fp32'",
        ctx.describe()
    )))
}

/// The tile type of a precision, as a variant (`Operand` is f32 unless replaced).
fn operand_type(ctx: &GpuContext, precision: Precision) -> Result<Option<(&'static str, String)>> {
    match precision {
        Precision::Fp32 => Ok(None),
        Precision::Mixed => check_half(ctx).map(|()| Some(("Operand", "f16".to_string()))),
    }
}

/// Whether a GEMM of this shape runs in one pass (no split-K partials to add afterwards), so that
/// its store can apply an epilogue.
pub fn unsplit(mnk: (usize, usize, usize), output_len: usize) -> bool {
    let (m, n, k) = mnk;
    let tile = tile_for(m);
    split_k(tile.tiles(m, n), k, tile.bk, output_len).0 == 1
}

/// Runs `g` through `family`, whose parameters `params` builds from the chosen shape. When the
/// output tiles alone cannot fill the GPU the reduction is split (split-K) and the partials are
/// added by reduce.wgsl.
pub fn run<P: Uniform>(
    ctx: &GpuContext,
    family: &GemmFamily<P>,
    g: Gemm,
    params: impl FnOnce(GemmShape) -> P,
) -> Result<GpuStorage> {
    run_then(ctx, family, g, params, elementwise::Epilogue::default())
}

/// [`run`], with `after_split` applied by the split-K sum when the reduction is split (the
/// family's store applies its own epilogue when it is not: see [`unsplit`]).
pub fn run_then<P: Uniform>(
    ctx: &GpuContext,
    family: &GemmFamily<P>,
    g: Gemm,
    params: impl FnOnce(GemmShape) -> P,
    after_split: elementwise::Epilogue,
) -> Result<GpuStorage> {
    let (m, n, k) = g.mnk;
    let tile = launch_tile(ctx, m, g.precision);
    let (splits, k_chunk) = split_k(tile.tiles(m, n), k, tile.bk, g.output_len);
    let out = output(ctx, splits * g.output_len)?;
    let output_len = g.output_len;
    launch(ctx, family, g, (tile, splits, k_chunk), &out, params)?;
    if splits == 1 {
        return Ok(out);
    }
    reduce::sum_leading_then(ctx, &out, splits, output_len, after_split)
}

/// Several GEMMs of one family that write disjoint parts of one output of `output_len` floats
/// (each part's store says where). They share one split-K count, the largest any part wants, so
/// the partials of every part land in the same `splits` copies of the output and one sum adds
/// them; a part whose reduction is too short for that many chunks writes zeros in the rest.
/// `params` builds part i's parameter block from its shape.
pub fn run_parts<P: Uniform>(
    ctx: &GpuContext,
    family: &GemmFamily<P>,
    parts: Vec<Gemm>,
    output_len: usize,
    params: impl Fn(usize, GemmShape) -> P,
) -> Result<GpuStorage> {
    let splits = parts
        .iter()
        .map(|g| {
            let (m, n, k) = g.mnk;
            let tile = launch_tile(ctx, m, g.precision);
            split_k(tile.tiles(m, n), k, tile.bk, output_len).0
        })
        .max()
        .unwrap_or(1);
    let out = output(ctx, splits * output_len)?;
    for (i, g) in parts.into_iter().enumerate() {
        let (m, _, k) = g.mnk;
        let tile = launch_tile(ctx, m, g.precision);
        let bk = tile.bk as usize;
        let k_chunk = (k.div_ceil(splits).div_ceil(bk) * bk).max(bk);
        launch(ctx, family, g, (tile, splits, k_chunk), &out, |s| params(i, s))?;
    }
    if splits == 1 {
        return Ok(out);
    }
    reduce::sum_leading(ctx, &out, splits, output_len)
}

fn launch<P: Uniform>(
    ctx: &GpuContext,
    family: &GemmFamily<P>,
    g: Gemm,
    (tile, splits, k_chunk): (Tile, usize, usize),
    out: &GpuStorage,
    params: impl FnOnce(GemmShape) -> P,
) -> Result<()> {
    const {
        assert!(
            begins_as_gemm(P::FIELDS),
            "a GEMM parameter block must begin with m, n, k, splits, k_chunk"
        )
    };
    let (m, n, k) = g.mnk;
    let shape = GemmShape {
        m: to_u32(m)?,
        n: to_u32(n)?,
        k: to_u32(k)?,
        splits: to_u32(splits)?,
        k_chunk: to_u32(k_chunk)?,
    };
    let p = params(shape);
    let mut buffers = g.inputs.to_vec();
    buffers.push((g.output, out));
    let attempt = |tile: Tile| -> Result<()> {
        let mut variant = g.variant.clone();
        variant.extend(tile.consts());
        variant.extend(operand_type(ctx, g.precision)?);
        let family = if tile.coop.is_some() {
            &family.coop
        } else {
            &family.tiled
        };
        family.launch_variant(ctx, "main", &variant, &p, &buffers, tile.tiles(m, n) * splits as u64)
    };
    match attempt(tile) {
        // The cooperative-matrix loop has only been validated by naga where it was written: a
        // driver that will not compile it costs the tensor cores, not the run. The tiled tile
        // has the same output tile, so the split-K plan stands.
        Err(Error::Internal(e)) if tile.coop.is_some() && e.starts_with("compiling WGSL kernel") => {
            set_tensor_cores(false);
            eprintln!(
                "resnet-wgpu: the tensor-core GEMM did not compile on this GPU ({e}); precision 'mixed' goes on \
                 with the f16 tiled GEMM"
            );
            attempt(tile_for(m))
        }
        other => other,
    }
}

uniform! {
    pub struct MatmulParams {
        m: u32,
        n: u32,
        k: u32,
        splits: u32,
        k_chunk: u32,
    }
}

pub(super) static MATMUL: GemmFamily<MatmulParams> = GemmFamily::new(
    "matmul",
    "matmul (cooperative matrices)",
    &[read("ma"), read("mb"), read_write("mc")],
    &[include_str!("matmul.wgsl"), PLAIN_K],
);

/// `c[m, n] = op(a) . op(b)`, op(a) being a [m, k] or, transposed, a [k, m] (and so for b).
pub fn matmul(
    ctx: &GpuContext,
    a: &GpuStorage,
    b: &GpuStorage,
    (m, k, n): (usize, usize, usize),
    (transpose_a, transpose_b): (bool, bool),
    precision: Precision,
) -> Result<GpuStorage> {
    let variant = vec![
        ("TRANS_A", transpose_a.to_string()),
        ("TRANS_B", transpose_b.to_string()),
        ("A_K_FAST", (!transpose_a).to_string()),
        ("B_K_FAST", transpose_b.to_string()),
    ];
    let g = Gemm {
        mnk: (m, n, k),
        variant,
        inputs: &[("ma", a), ("mb", b)],
        output: "mc",
        output_len: m * n,
        precision,
    };
    run(ctx, &MATMUL, g, |s| MatmulParams {
        m: s.m,
        n: s.n,
        k: s.k,
        splits: s.splits,
        k_chunk: s.k_chunk,
    })
}

#[cfg(test)]
mod tests {
    use super::unsplit;

    #[test]
    fn long_reductions_over_few_tiles_split_and_wide_ones_do_not() {
        // ResNet-18's 512-channel 3x3 layer on one 4x4 image: 8 tiles, K = 4608.
        assert!(!unsplit((512, 16, 4608), 512 * 16));
        // A 64-channel 3x3 layer over 32 images of 56x56: plenty of tiles.
        assert!(unsplit((64, 32 * 56 * 56, 576), 64 * 32 * 56 * 56));
    }
}
