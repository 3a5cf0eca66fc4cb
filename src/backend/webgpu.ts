// Filled in by the webgpu backend work.
export async function registerWebGpuBackend(): Promise<boolean> {
  return false;
}
