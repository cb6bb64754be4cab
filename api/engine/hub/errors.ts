export type HubErrorKind =
  | "exists"
  | "busy"
  | "not_found"
  | "forbidden"
  | "unreachable"
  | "not_onnx"
  | "corrupt"
  | "failed"
  | "no_space";

export class HubError extends Error {
  override name = "HubError";
  constructor(
    readonly kind: HubErrorKind,
    message: string,
  ) {
    super(message);
  }
}
