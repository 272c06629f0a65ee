/**
 * WebGPU adapter and device acquisition.
 *
 * The device is created with the adapter's own limits for the sizes moelab depends on. The WebGPU
 * defaults (128 MiB storage bindings, 16 KiB workgroup memory) are below what many adapters
 * support, and a tensor over the real limit should fail with a message, not a validation error.
 */

import { BackendUnavailableError } from "../backend.ts";

/** Limits copied from the adapter into `requiredLimits`. */
const REQUESTED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxUniformBufferBindingSize",
] as const;

const INSTALL_HINT =
  "WebGPU in Deno needs a Vulkan, Metal or DirectX 12 driver: on Linux install " +
  "a Vulkan driver (for example Mesa's, which includes the llvmpipe software adapter: " +
  "`apt install mesa-vulkan-drivers`). Without a GPU, run with `--backend cpu`.";

export interface AcquiredDevice {
  device: GPUDevice;
  limits: GPUSupportedLimits;
  /** "webgpu: " followed by the adapter's description or vendor. */
  description: string;
}

export interface DeviceOptions {
  powerPreference?: GPUPowerPreference;
}

/** Requests an adapter and a device, or throws `BackendUnavailableError` saying what to install. */
export async function acquireDevice(options: DeviceOptions = {}): Promise<AcquiredDevice> {
  const gpu: GPU | undefined = globalThis.navigator?.gpu;
  if (!gpu) {
    throw new BackendUnavailableError(
      `navigator.gpu is missing, so this runtime has no WebGPU. ${INSTALL_HINT}`,
    );
  }

  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference });
  } catch (error) {
    throw new BackendUnavailableError(
      `WebGPU requestAdapter failed (${errorMessage(error)}). ${INSTALL_HINT}`,
    );
  }
  if (!adapter) {
    throw new BackendUnavailableError(`WebGPU found no adapter. ${INSTALL_HINT}`);
  }

  const requiredLimits: Record<string, number> = {};
  for (const name of REQUESTED_LIMITS) requiredLimits[name] = adapter.limits[name];

  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits });
  } catch (error) {
    throw new BackendUnavailableError(
      `WebGPU requestDevice failed (${errorMessage(error)}). ${INSTALL_HINT}`,
    );
  }

  const info = adapter.info;
  const name = info.description || info.vendor || info.device || "unknown adapter";
  return { device, limits: device.limits, description: `webgpu: ${name}` };
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
