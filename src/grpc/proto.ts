/**
 * The qlik.sse contract, loaded once from proto/ServerSideExtension.proto. Messages outside the hot
 * path (headers, capabilities, table descriptions) go through protobufjs; rows use src/rows.ts.
 */
import path from 'node:path';

import protobuf from 'protobufjs';

export const PROTO_PATH = path.join(__dirname, '..', '..', '..', 'proto', 'ServerSideExtension.proto');

const root = protobuf.loadSync(PROTO_PATH);

export const messages = {
  Empty: root.lookupType('qlik.sse.Empty'),
  Capabilities: root.lookupType('qlik.sse.Capabilities'),
  ScriptRequestHeader: root.lookupType('qlik.sse.ScriptRequestHeader'),
  CommonRequestHeader: root.lookupType('qlik.sse.CommonRequestHeader'),
  FunctionRequestHeader: root.lookupType('qlik.sse.FunctionRequestHeader'),
  TableDescription: root.lookupType('qlik.sse.TableDescription'),
  BundledRows: root.lookupType('qlik.sse.BundledRows'),
};

/** Plain-object view of a decoded message: enums and int64 as numbers, defaults filled in. */
export function decodeMessage(type: protobuf.Type, bytes: Uint8Array): Record<string, unknown> {
  // A plain Uint8Array gets protobufjs's bounds-checked reader; its Buffer reader clamps truncated strings.
  const view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return type.toObject(type.decode(view), { enums: Number, longs: Number, defaults: true, arrays: true });
}

export function encodeMessage(type: protobuf.Type, value: Record<string, unknown>): Buffer {
  const error = type.verify(value);
  if (error !== null) throw new Error(`invalid ${type.name}: ${error}`);
  return Buffer.from(type.encode(type.fromObject(value)).finish());
}
