/**
 * The projections of a Qwen2 / Qwen3 / Llama decoder layer under their transformers names, and the submodule
 * that holds each: the TypeScript side's one list of what LoRA / DoRA adapters can wrap (PEFT's target_modules).
 * The native trainer, which refuses other names, keeps the C++ list.
 */
export const DECODER_PROJECTION_PARENT: Readonly<Record<string, 'self_attn' | 'mlp'>> = {
  q_proj: 'self_attn',
  k_proj: 'self_attn',
  v_proj: 'self_attn',
  o_proj: 'self_attn',
  gate_proj: 'mlp',
  up_proj: 'mlp',
  down_proj: 'mlp'
}

/** Every decoder projection, in layer order (attention, then MLP). */
export const DECODER_PROJECTIONS: readonly string[] = Object.keys(DECODER_PROJECTION_PARENT)
