// Autoregressive generation: greedy decoding and beam search with a key/value cache, batched, following
// transformers' generate() (v5) so that the same model gives the same tokens.
//
// Lengths. max_new_tokens is the primary knob: at most that many tokens are generated per sequence. max_length
// is transformers' max_length: the length of the returned sequences, which include the prompt for GPT-2 and
// the decoder start token for T5/BART. When both are set max_new_tokens wins; when neither is, 20 new tokens
// (capped by the model's position table), as transformers. min_length / min_new_tokens ban the end-of-sequence
// ids while the sequence is shorter, counted the same way (min_new_tokens, when set, replaces min_length).
//
// Outputs are transformers' too: GPT-2 returns [prompt; generated] (prompts left-padded, as transformers
// expects for decoder-only models), T5/BART return [decoder start; generated]. Greedy pads finished rows with
// pad_token_id (eos when there is none); beam search fills the tail of shorter hypotheses with pad_token_id,
// or with eos when pad_token_id is 0 or unset (transformers' `pad or eos`), and crops to the longest
// returned hypothesis.
//
// Beam search is transformers' vectorised beam search: each step keeps the top 2 * num_beams (more with
// several eos ids) continuations over all beams, finishes those that end in eos (or reach max_length) among
// the top num_beams, scores finished hypotheses as sum(log p) / generated_length^length_penalty, and stops by
// early_stopping: Heuristic (transformers' False), Always (True), Never ("never").
//
// Every per-example ForwardContext field (sample_adapters, task_ids, visual) is repeated per beam, so adapters selected
// per example and routing on visual features survive beam search.
#pragma once
#include <functional>
#include <optional>
#include <vector>

#include "models/bart.h"
#include "models/config.h"
#include "models/gpt2.h"
#include "models/module.h"
#include "models/seq2seq.h"
#include "models/t5.h"

namespace vlp {

enum class EarlyStopping { Heuristic, Always, Never };

struct GenerationOptions {
  int64_t max_new_tokens = -1;  // > 0: see above
  int64_t max_length = -1;      // > 0: see above
  int64_t min_length = 0;
  int64_t min_new_tokens = 0;
  int64_t num_beams = 1;
  int64_t num_return_sequences = 1;  // beam search: the best n hypotheses of each example, best first
  double length_penalty = 1.0;
  EarlyStopping early_stopping = EarlyStopping::Heuristic;
  int64_t no_repeat_ngram_size = 0;  // > 0: never repeat an n-gram of the sequence (prompt included)
  bool use_cache = true;             // false recomputes the whole sequence every step (same tokens, slower)
  // Special tokens; unset = the model config's.
  std::optional<std::vector<int64_t>> eos_token_id;
  std::optional<int64_t> pad_token_id, decoder_start_token_id, forced_bos_token_id;
  std::optional<std::vector<int64_t>> forced_eos_token_id;
};

struct GenerationOutput {
  Tensor sequences;        // [B * num_return_sequences, L] I64
  Tensor sequence_scores;  // beam search: [B * num_return_sequences] F32 final scores; greedy: undefined
};

// The decoder side of a model as the decoding loop drives it. step() receives every token so far ([N, T],
// N = batch * beams) and the padding mask of those positions ([N, T] I64, undefined = none) and returns the
// logits of the next token [N, V] (F32); with a cache it feeds only the tokens not seen before. reorder()
// keeps the given rows of the cache (beam search).
struct DecodingModel {
  int64_t vocab_size = 0;
  int64_t max_positions = 0;  // caps the default max_length; 0 = no cap
  Device device;              // where step() wants its ids and masks
  std::function<Tensor(const Tensor& ids, const Tensor& mask)> step;
  std::function<void(const Tensor& rows)> reorder;
};

// The decoding loop over prompts [N, T0] (already repeated per beam: rows b*num_beams .. b*num_beams + beams-1
// belong to example b) with their padding mask (undefined = none). `tokens` supplies the special tokens the
// options leave unset; `vocab_size` and friends come from `model`.
GenerationOutput decode_loop(const DecodingModel& model, const Tensor& prompts, const Tensor& prompt_mask,
                             const GenerationOptions& options, const SpecialTokens& tokens);

// GPT-2: input_ids [B, T] left-padded, attention_mask [B, T] (undefined = no padding).
GenerationOutput generate(const GPT2LMHeadModel& model, const Tensor& input_ids, const Tensor& attention_mask,
                          const GenerationOptions& options = {}, const ForwardContext& ctx = {});
// GPT-2 from input_ids or from inputs_embeds [B, T, D] (e.g. a visual prefix followed by token embeddings),
// with attention_mask over those positions. From embeddings, as transformers does, the returned sequences
// hold only the generated tokens and max_length / min_length count only those.
GenerationOutput generate(const GPT2LMHeadModel& model, const GPT2Input& prompt, const GenerationOptions& options = {},
                          const ForwardContext& ctx = {});
// T5 / BART from encoder inputs.
GenerationOutput generate(const T5ForConditionalGeneration& model, const EncoderInput& input,
                          const GenerationOptions& options = {}, const ForwardContext& ctx = {});
GenerationOutput generate(const BartForConditionalGeneration& model, const EncoderInput& input,
                          const GenerationOptions& options = {}, const ForwardContext& ctx = {});
// T5 / BART from an encoder output the caller computed (VL models: visual tokens appended); one row per example.
GenerationOutput generate(const T5ForConditionalGeneration& model, const EncoderOutput& encoder_output,
                          const GenerationOptions& options = {}, const ForwardContext& ctx = {});
GenerationOutput generate(const BartForConditionalGeneration& model, const EncoderOutput& encoder_output,
                          const GenerationOptions& options = {}, const ForwardContext& ctx = {});

// ctx with every per-example field repeated `times` (rows b*times .. b*times + times - 1 = example b).
ForwardContext repeat_context(const ForwardContext& ctx, int64_t batch, int64_t times);
// Rows of x repeated `times` each along dim 0 (torch.repeat_interleave); undefined stays undefined.
Tensor repeat_rows(const Tensor& x, int64_t times);

}  // namespace vlp
