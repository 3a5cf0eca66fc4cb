// Filled in by the wasm backend work.
export async function registerWasmBackend(): Promise<boolean> {
  return false;
}
