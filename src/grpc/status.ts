import { Metadata, type StatusObject, status } from '@grpc/grpc-js';

import { type ErrorCode, PluginError } from '../contract/errors';

const STATUS_OF: Record<ErrorCode, status> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  DEADLINE_EXCEEDED: status.DEADLINE_EXCEEDED,
  RESOURCE_EXHAUSTED: status.RESOURCE_EXHAUSTED,
  PERMISSION_DENIED: status.PERMISSION_DENIED,
  UNIMPLEMENTED: status.UNIMPLEMENTED,
  CANCELLED: status.CANCELLED,
  UNAVAILABLE: status.UNAVAILABLE,
  INTERNAL: status.INTERNAL,
  ABORTED: status.ABORTED,
};

/** The one mapping from our errors to a gRPC status with safe one-line details. */
export function toStatus(error: unknown, metadata: Metadata = new Metadata()): StatusObject {
  const pluginError = PluginError.from(error);
  return { code: STATUS_OF[pluginError.code], details: pluginError.message, metadata };
}

/** The gRPC status name, for logs and metrics. */
export function statusName(code: status): string {
  return status[code] ?? String(code);
}
