/**
 * Line charts for the experiments' curves, as SVG text, and PNG through resvg (a Rust SVG
 * renderer with prebuilt binaries). A chart is a row of panels that share a legend, as in the
 * paper's figures (plain | residual).
 *
 * @module
 */

import { existsSync } from 'node:fs';
import { writeFile, rename } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/** One line of a panel. */
export interface Series {
  label: string;
  x: readonly number[];
  y: readonly number[];
  /** CSS colour; by default the series' index picks one of ten. */
  color?: string;
  /** Dashed (the paper's training error) instead of solid. */
  dashed?: boolean;
  /** Stroke width (default 1.5; the paper draws test error bold). */
  width?: number;
  /** Draw a dot at each point. */
  markers?: boolean;
}

/** One set of axes. */
export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Logarithmic y axis (values <= 0 are dropped). */
  yLog?: boolean;
  /** Fixed y range; by default the data's range, padded. */
  yRange?: [number, number];
  xRange?: [number, number];
}

export interface Figure {
  title?: string;
  panels: Panel[];
  /** Width of one panel in px (default 460). */
  panelWidth?: number;
  /** Height of the plotting area row in px (default 340). */
  panelHeight?: number;
}

/** The ten colours series take in turn. */
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
/** The `i`-th colour of the palette (cycling), to give related series one colour. */
export function paletteColor(i: number): string {
  return PALETTE[i % PALETTE.length] as string;
}

const FONT = 'DejaVu Sans, Arial, Helvetica, sans-serif';

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Round tick positions (1, 2, 5 x 10^k) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, target = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0).replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}

interface Scale {
  map(v: number): number;
  ticks: number[];
  lo: number;
  hi: number;
}

function linearScale(lo: number, hi: number, from: number, to: number, pad: boolean): Scale {
  if (hi === lo) {
    hi = lo + (lo === 0 ? 1 : Math.abs(lo) * 0.1);
    lo = lo - (lo === 0 ? 0 : Math.abs(lo) * 0.1);
  }
  if (pad) {
    const d = (hi - lo) * 0.04;
    lo -= d;
    hi += d;
  }
  const ticks = niceTicks(lo, hi).filter((t) => t >= lo - 1e-12 && t <= hi + 1e-12);
  return { lo, hi, ticks, map: (v) => from + ((v - lo) / (hi - lo)) * (to - from) };
}

function logScale(lo: number, hi: number, from: number, to: number): Scale {
  const a = Math.floor(Math.log10(lo));
  let b = Math.ceil(Math.log10(hi));
  if (b === a) b = a + 1;
  // Every decade up to eight of them, else every second, third, ... decade.
  const every = Math.ceil((b - a) / 8);
  const ticks: number[] = [];
  for (let k = a; k <= b; k += every) ticks.push(10 ** k);
  return { lo: 10 ** a, hi: 10 ** b, ticks, map: (v) => from + ((Math.log10(v) - a) / (b - a)) * (to - from) };
}

function extent(values: number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (Number.isFinite(v)) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  return lo <= hi ? [lo, hi] : [0, 1];
}

function panelSvg(panel: Panel, x0: number, y0: number, w: number, h: number, colorOf: (s: Series, i: number) => string): string {
  const out: string[] = [];
  const left = x0 + 62;
  const right = x0 + w - 14;
  const top = y0 + 28;
  const bottom = y0 + h - 46;
  const keep = (v: number): boolean => Number.isFinite(v) && (!panel.yLog || v > 0);
  const xs = panel.series.flatMap((s) => s.x.filter((_, i) => keep(s.y[i] ?? NaN)));
  const ys = panel.series.flatMap((s) => s.y.filter(keep));
  const [xlo, xhi] = panel.xRange ?? extent(xs);
  const [ylo, yhi] = panel.yRange ?? extent(ys);
  const sx = linearScale(xlo, xhi, left, right, false);
  const sy = panel.yLog ? logScale(Math.max(ylo, 1e-30), Math.max(yhi, 1e-30), bottom, top) : linearScale(ylo, yhi, bottom, top, panel.yRange === undefined);
  const titleSize = Math.max(9, Math.min(14, Math.floor((right - left + 40) / (0.66 * panel.title.length))));
  out.push(`<text x="${(left + right) / 2}" y="${y0 + 18}" text-anchor="middle" font-size="${titleSize}" font-weight="bold">${escapeXml(panel.title)}</text>`);
  // Grid and ticks.
  for (const t of sy.ticks) {
    const y = sy.map(t).toFixed(1);
    out.push(`<line x1="${left}" x2="${right}" y1="${y}" y2="${y}" stroke="#e4e4e4" stroke-width="1"/>`);
    out.push(`<text x="${left - 6}" y="${y}" dy="4" text-anchor="end" font-size="11">${formatTick(t)}</text>`);
  }
  for (const t of sx.ticks) {
    const x = sx.map(t).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${top}" y2="${bottom}" stroke="#f0f0f0" stroke-width="1"/>`);
    out.push(`<text x="${x}" y="${bottom + 16}" text-anchor="middle" font-size="11">${formatTick(t)}</text>`);
  }
  out.push(`<rect x="${left}" y="${top}" width="${right - left}" height="${bottom - top}" fill="none" stroke="#333" stroke-width="1"/>`);
  out.push(`<text class="x-label" x="${(left + right) / 2}" y="${bottom + 36}" text-anchor="middle" font-size="12">${escapeXml(panel.xLabel)}</text>`);
  const ly = (top + bottom) / 2;
  out.push(`<text class="y-label" x="${x0 + 16}" y="${ly}" text-anchor="middle" font-size="12" transform="rotate(-90 ${x0 + 16} ${ly})">${escapeXml(panel.yLabel)}</text>`);
  // Lines, clipped to the plotting area.
  const clip = `clip${Math.round(x0)}_${Math.round(y0)}`;
  out.push(`<clipPath id="${clip}"><rect x="${left}" y="${top}" width="${right - left}" height="${bottom - top}"/></clipPath>`);
  out.push(`<g clip-path="url(#${clip})">`);
  panel.series.forEach((s, i) => {
    const pts: string[] = [];
    for (let k = 0; k < Math.min(s.x.length, s.y.length); k++) {
      const xv = s.x[k] as number;
      const yv = s.y[k] as number;
      if (!Number.isFinite(xv) || !keep(yv)) continue;
      pts.push(`${sx.map(xv).toFixed(1)},${sy.map(yv).toFixed(1)}`);
    }
    const color = colorOf(s, i);
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    if (pts.length > 1) {
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="${s.width ?? 1.5}"${dash} stroke-linejoin="round" points="${pts.join(' ')}"/>`);
    }
    if (s.markers || pts.length === 1) {
      for (const p of pts) {
        const [cx, cy] = p.split(',');
        out.push(`<circle cx="${cx}" cy="${cy}" r="2.5" fill="${color}"/>`);
      }
    }
  });
  out.push('</g>');
  return out.join('\n');
}

/** The figure as a standalone SVG document. */
export function renderSvg(figure: Figure): string {
  if (figure.panels.length === 0) throw new Error('a figure needs at least one panel');
  const pw = figure.panelWidth ?? 460;
  const ph = figure.panelHeight ?? 340;
  const titleH = figure.title ? 30 : 6;
  // One legend entry per distinct label, in first-seen order, with its colour and dash.
  const colors = new Map<string, string>();
  const legend: Series[] = [];
  const colorOf = (s: Series, _i: number): string => {
    const c = colors.get(s.label);
    if (c !== undefined) return c;
    const picked = s.color ?? PALETTE[colors.size % PALETTE.length] ?? '#000';
    colors.set(s.label, picked);
    return picked;
  };
  for (const p of figure.panels) {
    p.series.forEach((s, i) => {
      colorOf(s, i);
      if (!legend.some((l) => l.label === s.label && !!l.dashed === !!s.dashed)) legend.push(s);
    });
  }
  const perRow = Math.max(1, Math.floor((pw * figure.panels.length - 20) / 190));
  const legendRows = Math.ceil(legend.length / perRow);
  const width = pw * figure.panels.length;
  const height = titleH + ph + 14 + legendRows * 20;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
  ];
  if (figure.title) {
    // Shrink a long title to fit (bold DejaVu Sans averages about 0.66 em per character).
    const size = Math.max(9, Math.min(15, Math.floor((width - 20) / (0.66 * figure.title.length))));
    parts.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="${size}" font-weight="bold">${escapeXml(figure.title)}</text>`);
  }
  figure.panels.forEach((p, i) => parts.push(panelSvg(p, i * pw, titleH, pw, ph, colorOf)));
  parts.push('<g class="legend">');
  legend.forEach((s, i) => {
    const x = 20 + (i % perRow) * 190;
    const y = titleH + ph + 14 + Math.floor(i / perRow) * 20;
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    parts.push(`<line x1="${x}" x2="${x + 28}" y1="${y}" y2="${y}" stroke="${colors.get(s.label)}" stroke-width="${s.width ?? 1.5}"${dash}/>`);
    parts.push(`<text x="${x + 34}" y="${y}" dy="4" font-size="12">${escapeXml(s.label)}</text>`);
  });
  parts.push('</g>', '</svg>');
  return parts.join('\n');
}

/**
 * The bundled DejaVu Sans (machines without fonts, such as a bare server, would otherwise get a
 * PNG without any text), plus the system's bold face where there is one.
 */
function fontOptions(): { loadSystemFonts: boolean; fontFiles: string[]; defaultFontFamily: string } {
  const bundled = fileURLToPath(new URL('../assets/fonts/DejaVuSans.ttf', import.meta.url));
  if (!existsSync(bundled)) throw new Error(`the bundled font is missing: ${bundled} (reinstall resnet-wgpu)`);
  const bold = '/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf';
  return { loadSystemFonts: false, fontFiles: existsSync(bold) ? [bundled, bold] : [bundled], defaultFontFamily: 'DejaVu Sans' };
}

/** Renders SVG text to PNG bytes at `scale` x its size. */
export async function svgToPng(svg: string, scale = 2): Promise<Uint8Array> {
  const { Resvg } = await import('@resvg/resvg-js');
  const r = new Resvg(svg, { font: fontOptions(), fitTo: { mode: 'zoom', value: scale }, background: '#ffffff' });
  return r.render().asPng();
}

/** Writes a file through a temporary name and a rename, so readers never see half of it. */
export async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

/** Writes `<base>.svg` and `<base>.png`; returns their paths. */
export async function writeFigure(base: string, figure: Figure): Promise<{ svg: string; png: string }> {
  const svg = renderSvg(figure);
  await writeAtomic(`${base}.svg`, svg);
  await writeAtomic(`${base}.png`, await svgToPng(svg));
  return { svg: `${base}.svg`, png: `${base}.png` };
}

/** Rows as CSV text (numbers printed in full, strings quoted when needed). */
export function toCsv(header: readonly string[], rows: ReadonlyArray<ReadonlyArray<string | number | undefined>>): string {
  const cell = (v: string | number | undefined): string => {
    if (v === undefined || (typeof v === 'number' && !Number.isFinite(v))) return '';
    const s = String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [header.map(cell).join(','), ...rows.map((r) => r.map(cell).join(','))].join('\n') + '\n';
}

/** Writes a CSV file atomically. */
export async function writeCsv(path: string, header: readonly string[], rows: ReadonlyArray<ReadonlyArray<string | number | undefined>>): Promise<void> {
  await writeAtomic(path, toCsv(header, rows));
}
