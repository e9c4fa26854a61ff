/**
 * The error thrown when the compiled addon cannot be loaded: it names this platform, the
 * platforms that have a prebuilt package, and how to build the addon from source. The loader's
 * own errors stay attached as `cause`.
 *
 * @internal
 * @module
 */

/**
 * Platforms with a prebuilt `resnet-wgpu-<platform>` package (the release matrix; the same names
 * as `npm/` and `napi.targets` in package.json, checked by the tests).
 */
export const PREBUILT_PLATFORMS: readonly string[] = [
  'linux-x64-gnu',
  'linux-x64-musl',
  'linux-arm64-gnu',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
  'win32-x64-msvc',
];

/** This process's platform in napi-rs's naming: `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`, ... */
export function currentPlatform(): string {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    return `${platform}-${arch}-${header?.glibcVersionRuntime !== undefined ? 'gnu' : 'musl'}`;
  }
  if (platform === 'win32') return `${platform}-${arch}-msvc`;
  return `${platform}-${arch}`;
}

/** Wraps a failure of the generated loader (`native/index.cjs`) into an actionable error. */
export function nativeLoadError(cause: unknown, platform: string = currentPlatform()): Error {
  const pkg = `resnet-wgpu-${platform}`;
  const why = cause instanceof Error ? cause.message : String(cause);
  const prebuilt = PREBUILT_PLATFORMS.includes(platform);
  const lines = [
    `resnet-wgpu: could not load the native addon for ${platform} (Node ${process.version}).`,
    prebuilt
      ? `A prebuilt binary exists for ${platform} in the optional dependency \`${pkg}\`, but it was not installed or did not load: ` +
        'reinstall without `--omit=optional` / `--no-optional` (if it still fails, delete node_modules and package-lock.json first: npm bug https://github.com/npm/cli/issues/4828).'
      : `No prebuilt binary for ${platform}: prebuilt packages exist for ${PREBUILT_PLATFORMS.join(', ')}.`,
    'To build it from source: install Rust (https://rustup.rs) and Node >= 20.19, clone the resnet-wgpu repository, run ' +
      '`npm install && npm run build` there (the addon lands in native/), then use that checkout ' +
      '(`npm install /path/to/resnet-wgpu`) or point NAPI_RS_NATIVE_LIBRARY_PATH at the built .node file.',
    `Loader error: ${why}`,
  ];
  return new Error(lines.join('\n'), { cause });
}
