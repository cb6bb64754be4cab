/** The pipeline's errors, which keep their meaning across the engine worker's thread boundary. */

export class GenerationAborted extends Error {
  override name = "GenerationAborted";
}

export class GenerationFailed extends Error {
  override name = "GenerationFailed";
  constructor(
    message: string,
    /** The stage that failed (text_encoder, unet, vae_decoder, ...), when known. */
    readonly stage: string | null = null,
  ) {
    super(message);
  }
}

/** The request cannot run on this model (a client error, not an engine failure). */
export class GenerationInvalid extends Error {
  override name = "GenerationInvalid";
}
