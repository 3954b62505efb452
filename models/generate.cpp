#include "models/generate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace vlp {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kBig = -1.0e9f;  // transformers' "never choose this" offset

// The options with every special token and length resolved.
struct Plan {
  std::vector<int64_t> eos;
  std::optional<int64_t> pad;  // pad for finished greedy rows: the pad id, else eos[0]
  int64_t beam_fill = -1;      // filler after a shorter beam hypothesis: pad unless 0/unset, then eos[0]
  std::optional<int64_t> forced_bos;
  std::vector<int64_t> forced_eos;
  int64_t prompt_len = 0, max_length = 0, min_length = 0, min_new_tokens = 0;
  int64_t num_beams = 1, num_return = 1, no_repeat_ngram = 0;
  double length_penalty = 1.0;
  EarlyStopping early_stopping = EarlyStopping::Heuristic;
};

Plan make_plan(const GenerationOptions& o, const SpecialTokens& t, int64_t prompt_len, int64_t max_positions) {
  Plan p;
  p.eos = o.eos_token_id ? *o.eos_token_id : t.eos_token_id;
  p.pad = o.pad_token_id ? o.pad_token_id : t.pad_token_id;
  if (!p.pad && !p.eos.empty()) p.pad = p.eos[0];
  p.beam_fill = p.eos.empty() ? -1 : (p.pad && *p.pad != 0 ? *p.pad : p.eos[0]);
  p.forced_bos = o.forced_bos_token_id ? o.forced_bos_token_id : t.forced_bos_token_id;
  p.forced_eos = o.forced_eos_token_id ? *o.forced_eos_token_id : t.forced_eos_token_id;
  p.prompt_len = prompt_len;
  if (o.max_new_tokens > 0) {
    p.max_length = prompt_len + o.max_new_tokens;
  } else if (o.max_length > 0) {
    p.max_length = o.max_length;
  } else {
    p.max_length = prompt_len + 20;
    if (max_positions > 0) p.max_length = std::min(p.max_length, max_positions);
  }
  VLP_CHECK(p.max_length > prompt_len, "generate: the input is ", prompt_len, " tokens long but max_length is ",
            p.max_length, "; set max_new_tokens");
  // As transformers: min_new_tokens, when set, replaces min_length.
  p.min_new_tokens = o.min_new_tokens;
  p.min_length = o.min_new_tokens > 0 ? prompt_len + o.min_new_tokens : o.min_length;
  p.num_beams = o.num_beams;
  p.num_return = o.num_return_sequences;
  VLP_CHECK(p.num_beams >= 1, "generate: num_beams must be at least 1, got ", p.num_beams);
  VLP_CHECK(p.num_return >= 1 && p.num_return <= p.num_beams, "generate: num_return_sequences (", p.num_return,
            ") must be between 1 and num_beams (", p.num_beams, ")");
  p.no_repeat_ngram = o.no_repeat_ngram_size;
  p.length_penalty = o.length_penalty;
  p.early_stopping = o.early_stopping;
  return p;
}

bool is_eos(const Plan& p, int64_t token) { return std::find(p.eos.begin(), p.eos.end(), token) != p.eos.end(); }

// transformers' logits processors, in its order, on one row of scores for a sequence of cur_len tokens.
void process(const Plan& p, const int64_t* seq, int64_t cur_len, float* scores, int64_t V) {
  const int64_t n = p.no_repeat_ngram;
  if (n > 0 && cur_len >= n) {
    // Ban every token that would complete an n-gram already present.
    const int64_t* prefix = seq + cur_len - (n - 1);
    for (int64_t start = 0; start + n <= cur_len; ++start)
      if (std::equal(seq + start, seq + start + n - 1, prefix)) {
        const int64_t banned = seq[start + n - 1];
        if (banned >= 0 && banned < V) scores[banned] = kNegInf;
      }
  }
  const bool ban_eos = cur_len < p.min_length || cur_len - p.prompt_len < p.min_new_tokens;
  if (ban_eos)
    for (int64_t e : p.eos)
      if (e >= 0 && e < V) scores[e] = kNegInf;
  if (p.forced_bos && cur_len == 1) {
    std::fill(scores, scores + V, kNegInf);
    scores[*p.forced_bos] = 0.0f;
  }
  if (!p.forced_eos.empty() && cur_len == p.max_length - 1) {
    std::fill(scores, scores + V, kNegInf);
    for (int64_t e : p.forced_eos) scores[e] = 0.0f;
  }
}

std::vector<float> to_floats(const Tensor& t) {
  Tensor c = convert(t, DType::F32, Device::cpu());
  const float* d = c.data<float>();
  return std::vector<float>(d, d + c.numel());
}

Tensor ids_tensor(const std::vector<std::vector<int64_t>>& rows, int64_t len, Device device = Device::cpu()) {
  std::vector<int64_t> flat;
  flat.reserve(rows.size() * size_t(len));
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.begin() + len);
  return from_data(flat, {int64_t(rows.size()), len}, device);
}

// The padding mask of the first cur_len positions: the prompt's, then ones.
Tensor mask_tensor(const std::vector<int64_t>& prompt_mask, int64_t N, int64_t prompt_len, int64_t cur_len,
                   Device device) {
  if (prompt_mask.empty()) return Tensor();
  std::vector<int64_t> m(size_t(N * cur_len), 1);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t t = 0; t < prompt_len; ++t) m[size_t(r * cur_len + t)] = prompt_mask[size_t(r * prompt_len + t)];
  return from_data(m, {N, cur_len}, device);
}

// Indices of the k largest values, best first; ties go to the lower index (deterministic).
std::vector<int64_t> top_k(const std::vector<float>& v, int64_t k) {
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) {
    return v[size_t(a)] > v[size_t(b)] || (v[size_t(a)] == v[size_t(b)] && a < b);
  });
  idx.resize(size_t(k));
  return idx;
}

GenerationOutput greedy(const DecodingModel& model, std::vector<std::vector<int64_t>> seqs,
                        const std::vector<int64_t>& prompt_mask, const Plan& p) {
  const int64_t N = int64_t(seqs.size()), V = model.vocab_size;
  for (auto& s : seqs) s.resize(size_t(p.max_length), 0);
  std::vector<bool> unfinished(size_t(N), true);
  int64_t cur_len = p.prompt_len;
  while (true) {
    std::vector<float> scores = to_floats(model.step(ids_tensor(seqs, cur_len, model.device),
                                                     mask_tensor(prompt_mask, N, p.prompt_len, cur_len, model.device)));
    VLP_CHECK(int64_t(scores.size()) == N * V, "generate: the model returned ", scores.size(), " logits, expected ",
              N, " x ", V);
    bool any_unfinished = false;
    for (int64_t r = 0; r < N; ++r) {
      float* row = scores.data() + r * V;
      process(p, seqs[size_t(r)].data(), cur_len, row, V);
      int64_t token = int64_t(std::max_element(row, row + V) - row);  // first maximum, as torch.argmax
      if (!p.eos.empty() && !unfinished[size_t(r)]) token = *p.pad;
      seqs[size_t(r)][size_t(cur_len)] = token;
      if (cur_len + 1 >= p.max_length || is_eos(p, token)) unfinished[size_t(r)] = false;
      any_unfinished = any_unfinished || unfinished[size_t(r)];
    }
    ++cur_len;
    if (!any_unfinished) break;
  }
  return {ids_tensor(seqs, cur_len), Tensor()};
}

struct Hypothesis {
  std::vector<int64_t> seq;  // max_length tokens, filled after the valid ones
  float score = kBig;
  int64_t generated = 0;     // tokens after the prompt (transformers' count of beam indices)
  bool finished = false;
};

GenerationOutput beam_search(const DecodingModel& model, const std::vector<std::vector<int64_t>>& prompts,
                             const std::vector<int64_t>& prompt_mask, const Plan& p) {
  const int64_t nb = p.num_beams, N = int64_t(prompts.size()), B = N / nb, V = model.vocab_size;
  const int64_t K = std::max<int64_t>(2, 1 + int64_t(p.eos.size())) * nb;  // continuations kept per example
  VLP_CHECK(nb * V >= K, "generate: beam search needs num_beams * vocab_size >= ", K);
  // running[b][k] and finished[b][k], as transformers' running_sequences / sequences.
  std::vector<std::vector<Hypothesis>> running(static_cast<size_t>(B)), finished(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = 0; k < nb; ++k) {
      Hypothesis h;
      h.seq.assign(size_t(p.max_length), p.beam_fill);
      std::copy(prompts[size_t(b * nb + k)].begin(), prompts[size_t(b * nb + k)].end(), h.seq.begin());
      h.score = k == 0 ? 0.0f : kBig;  // only beam 0 starts live, so the beams do not pick the same tokens
      finished[size_t(b)].push_back(h);
      finished[size_t(b)].back().score = kBig;
      running[size_t(b)].push_back(std::move(h));
    }
  }
  std::vector<bool> unsatisfied(size_t(B), true);  // transformers' is_early_stop_heuristic_unsatisfied
  int64_t cur_len = p.prompt_len;
  while (true) {
    std::vector<std::vector<int64_t>> flat(static_cast<size_t>(N));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < nb; ++k) flat[size_t(b * nb + k)] = running[size_t(b)][size_t(k)].seq;
    Tensor logits = model.step(ids_tensor(flat, cur_len, model.device),
                               mask_tensor(prompt_mask, N, p.prompt_len, cur_len, model.device));
    VLP_CHECK(logits.dim() == 2 && logits.size(0) == N && logits.size(1) == V, "generate: the model returned logits ",
              shape_str(logits.shape()), ", expected [", N, ", ", V, "]");
    std::vector<float> logp = to_floats(log_softmax(to(logits, DType::F32), -1));
    for (int64_t r = 0; r < N; ++r) process(p, flat[size_t(r)].data(), cur_len, logp.data() + r * V, V);

    const float length_norm = float(std::pow(double(cur_len + 1 - p.prompt_len), p.length_penalty));
    std::vector<int64_t> reorder_rows(static_cast<size_t>(N));
    bool all_hit = true;
    for (int64_t b = 0; b < B; ++b) {
      auto& run = running[size_t(b)];
      auto& fin = finished[size_t(b)];
      std::vector<float> acc(size_t(nb * V));
      for (int64_t k = 0; k < nb; ++k)
        for (int64_t t = 0; t < V; ++t)
          acc[size_t(k * V + t)] = logp[size_t((b * nb + k) * V + t)] + run[size_t(k)].score;
      // The top K continuations over all beams.
      std::vector<int64_t> top = top_k(acc, K);
      std::vector<Hypothesis> cand(static_cast<size_t>(K));
      std::vector<int64_t> source(static_cast<size_t>(K));
      std::vector<bool> hit(static_cast<size_t>(K));
      for (int64_t c = 0; c < K; ++c) {
        const int64_t beam = top[size_t(c)] / V, token = top[size_t(c)] % V;
        source[size_t(c)] = beam;
        cand[size_t(c)].seq = run[size_t(beam)].seq;
        cand[size_t(c)].seq[size_t(cur_len)] = token;
        cand[size_t(c)].score = acc[size_t(top[size_t(c)])];
        cand[size_t(c)].generated = cur_len + 1 - p.prompt_len;
        hit[size_t(c)] = cur_len + 1 >= p.max_length || is_eos(p, token);
        all_hit = all_hit && hit[size_t(c)];
      }
      // Running beams for the next step: the best num_beams that did not just finish.
      std::vector<float> live(static_cast<size_t>(K));
      for (int64_t c = 0; c < K; ++c) live[size_t(c)] = cand[size_t(c)].score + (hit[size_t(c)] ? kBig : 0.0f);
      std::vector<int64_t> next = top_k(live, nb);
      bool batch_full = p.early_stopping == EarlyStopping::Always;
      for (const auto& h : fin) batch_full = batch_full && h.finished;
      // Finished hypotheses: merge the old ones with the top-num_beams continuations that just finished.
      std::vector<Hypothesis> merged = fin;
      for (int64_t c = 0; c < K; ++c) {
        Hypothesis h = cand[size_t(c)];
        const bool just_finished = hit[size_t(c)] && c < nb;
        float s = h.score / length_norm;
        if (batch_full) s += kBig;
        if (!unsatisfied[size_t(b)]) s += kBig;
        if (!just_finished) s += kBig;
        h.score = s;
        h.finished = just_finished;
        merged.push_back(std::move(h));
      }
      std::vector<float> merged_scores(merged.size());
      for (size_t i = 0; i < merged.size(); ++i) merged_scores[i] = merged[i].score;
      std::vector<int64_t> keep = top_k(merged_scores, nb);
      std::vector<Hypothesis> new_fin, new_run;
      for (int64_t i : keep) new_fin.push_back(merged[size_t(i)]);
      for (int64_t k = 0; k < nb; ++k) {
        const int64_t c = next[size_t(k)];
        Hypothesis h = cand[size_t(c)];
        h.score = live[size_t(c)];
        new_run.push_back(std::move(h));
        reorder_rows[size_t(b * nb + k)] = b * nb + source[size_t(c)];
      }
      fin = std::move(new_fin);
      run = std::move(new_run);
    }
    if (model.reorder) model.reorder(from_data(reorder_rows, {N}, model.device));
    ++cur_len;

    // Can any running beam still beat the worst finished one? (transformers' early-stop heuristic)
    bool any_unsatisfied = false, all_finished = true;
    for (int64_t b = 0; b < B; ++b) {
      const auto& fin = finished[size_t(b)];
      const int64_t best_len = p.early_stopping == EarlyStopping::Never && p.length_penalty > 0.0
                                   ? p.max_length - p.prompt_len
                                   : cur_len - p.prompt_len;
      const float best_running =
          running[size_t(b)][0].score / float(std::pow(double(best_len), p.length_penalty));
      float worst = std::numeric_limits<float>::infinity();
      for (const auto& h : fin) worst = std::min(worst, h.score);
      bool improvable = false;
      for (const auto& h : fin) {
        improvable = improvable || best_running > (h.finished ? worst : kBig);
        all_finished = all_finished && h.finished;
      }
      unsatisfied[size_t(b)] = unsatisfied[size_t(b)] && improvable;
      any_unsatisfied = any_unsatisfied || unsatisfied[size_t(b)];
    }
    const bool open_beam = !(all_finished && p.early_stopping == EarlyStopping::Always);
    if (!(any_unsatisfied && open_beam && !all_hit)) break;
  }

  // The best num_return hypotheses of each example, cropped to the longest one returned.
  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < p.num_return; ++k) longest = std::max(longest, finished[size_t(b)][size_t(k)].generated);
  const int64_t L = p.prompt_len + longest;
  std::vector<std::vector<int64_t>> out;
  std::vector<float> scores;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < p.num_return; ++k) {
      out.push_back(finished[size_t(b)][size_t(k)].seq);
      scores.push_back(finished[size_t(b)][size_t(k)].score);
    }
  return {ids_tensor(out, L), from_data(scores, {int64_t(scores.size())})};
}

}  // namespace

Tensor repeat_rows(const Tensor& x, int64_t times) {
  if (!x.defined() || times == 1) return x;
  std::vector<int64_t> idx;
  for (int64_t r = 0; r < x.size(0); ++r)
    for (int64_t t = 0; t < times; ++t) idx.push_back(r);
  return index_select(x, 0, from_data(idx, {int64_t(idx.size())}, x.device()));
}

ForwardContext repeat_context(const ForwardContext& ctx, int64_t batch, int64_t times) {
  ForwardContext out = ctx;
  if (times == 1) return out;
  if (!ctx.sample_adapters.empty()) {
    VLP_CHECK(int64_t(ctx.sample_adapters.size()) == batch, "generate: ", ctx.sample_adapters.size(),
              " sample_adapters for a batch of ", batch);
    out.sample_adapters.clear();
    for (const auto& name : ctx.sample_adapters)
      for (int64_t t = 0; t < times; ++t) out.sample_adapters.push_back(name);
  }
  if (!ctx.task_ids.empty()) {
    VLP_CHECK(int64_t(ctx.task_ids.size()) == batch, "generate: ", ctx.task_ids.size(), " task_ids for a batch of ",
              batch);
    out.task_ids.clear();
    for (int64_t id : ctx.task_ids)
      for (int64_t t = 0; t < times; ++t) out.task_ids.push_back(id);
  }
  if (ctx.visual.defined()) {
    VLP_CHECK(ctx.visual.size(0) == batch, "generate: ctx.visual has ", ctx.visual.size(0), " rows for a batch of ",
              batch);
    out.visual = repeat_rows(ctx.visual, times);
  }
  return out;
}

GenerationOutput decode_loop(const DecodingModel& model, const Tensor& prompts, const Tensor& prompt_mask,
                             const GenerationOptions& options, const SpecialTokens& tokens) {
  NoGradGuard no_grad;
  VLP_CHECK(prompts.dim() == 2, "generate: prompts must be [N, T], got ", shape_str(prompts.shape()));
  const int64_t N = prompts.size(0), T0 = prompts.size(1);
  Plan p = make_plan(options, tokens, T0, model.max_positions);
  auto in_vocab = [&](int64_t id) { return id >= 0 && id < model.vocab_size; };
  VLP_CHECK(!p.forced_bos || in_vocab(*p.forced_bos), "generate: forced_bos_token_id ", *p.forced_bos,
            " is outside the vocabulary of ", model.vocab_size);
  for (int64_t id : p.forced_eos)
    VLP_CHECK(in_vocab(id), "generate: forced_eos_token_id ", id, " is outside the vocabulary of ", model.vocab_size);
  VLP_CHECK(N % p.num_beams == 0, "generate: ", N, " rows are not a multiple of num_beams = ", p.num_beams);
  std::vector<double> flat = to_vector(prompts);
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(N));
  for (int64_t r = 0; r < N; ++r)
    for (int64_t t = 0; t < T0; ++t) rows[size_t(r)].push_back(int64_t(flat[size_t(r * T0 + t)]));
  std::vector<int64_t> mask;
  if (prompt_mask.defined()) {
    VLP_CHECK(prompt_mask.shape() == prompts.shape(), "generate: attention mask ", shape_str(prompt_mask.shape()),
              " does not match the prompts ", shape_str(prompts.shape()));
    for (double v : to_vector(prompt_mask)) mask.push_back(v != 0.0 ? 1 : 0);
  }
  return p.num_beams == 1 ? greedy(model, rows, mask, p) : beam_search(model, rows, mask, p);
}

// ---- models ----

namespace {

// A cached decoder's state: how many of the loop's tokens it has consumed, and the padding mask of every
// position it has seen (prompt embeddings and positions an input site inserted included); may be undefined.
struct CachedRun {
  DecoderCache cache;
  int64_t consumed = 0;
  bool started = false;
  Tensor mask;
};

// Position ids of the positions [from, T) from a 0/1 mask [N, T]: cumsum - 1, pads at 0 (transformers).
Tensor positions_from_mask(const Tensor& mask, int64_t from) {
  const int64_t N = mask.size(0), T = mask.size(1);
  std::vector<double> m = to_vector(mask);
  std::vector<int64_t> pos(size_t(N * (T - from)));
  for (int64_t r = 0; r < N; ++r) {
    int64_t seen = 0;
    for (int64_t t = 0; t < T; ++t) {
      const bool valid = m[size_t(r * T + t)] != 0.0;
      seen += valid;
      if (t >= from) pos[size_t(r * (T - from) + t - from)] = valid ? seen - 1 : 0;
    }
  }
  return from_data(pos, {N, T - from}, mask.device());
}

template <class Model>
GenerationOutput generate_seq2seq(const Model& model, const EncoderOutput& encoder_in, const GenerationOptions& options,
                                  const ForwardContext& ctx, int64_t max_positions) {
  NoGradGuard no_grad;
  const int64_t B = encoder_in.hidden.size(0), beams = std::max<int64_t>(options.num_beams, 1);
  EncoderOutput enc{repeat_rows(encoder_in.hidden, beams), repeat_rows(encoder_in.mask, beams)};
  ForwardContext dctx = repeat_context(ctx, B, beams);
  const SpecialTokens& tokens = model.config.tokens;
  int64_t start = 0;
  if (options.decoder_start_token_id) {
    start = *options.decoder_start_token_id;
  } else if (tokens.decoder_start_token_id) {
    start = *tokens.decoder_start_token_id;
  } else {
    VLP_CHECK(tokens.bos_token_id, "generate: neither decoder_start_token_id nor bos_token_id is set");
    start = *tokens.bos_token_id;  // transformers falls back to bos
  }
  auto run = std::make_shared<CachedRun>();
  DecodingModel dm;
  dm.vocab_size = model.config.vocab_size;
  dm.max_positions = max_positions;
  dm.device = enc.hidden.device();
  dm.step = [&model, &enc, &dctx, run, use_cache = options.use_cache](const Tensor& ids, const Tensor&) {
    if (!use_cache) *run = CachedRun();
    const int64_t T = ids.size(1);
    Tensor fresh = narrow(ids, 1, run->consumed, T - run->consumed);
    Tensor hidden = model.decode(fresh, Tensor(), enc, &run->cache, dctx);
    run->consumed = T;
    return select(model.lm_logits(narrow(hidden, 1, hidden.size(1) - 1, 1)), 1, 0);
  };
  dm.reorder = [run](const Tensor& rows) { run->cache.reorder(rows, /*cross=*/false); };
  return decode_loop(dm, full({B * beams, 1}, double(start), DType::I64, dm.device), Tensor(), options, tokens);
}

}  // namespace

GenerationOutput generate(const GPT2LMHeadModel& model, const Tensor& input_ids, const Tensor& attention_mask,
                          const GenerationOptions& options, const ForwardContext& ctx) {
  GPT2Input prompt;
  prompt.input_ids = input_ids;
  prompt.attention_mask = attention_mask;
  return generate(model, prompt, options, ctx);
}

GenerationOutput generate(const GPT2LMHeadModel& model, const GPT2Input& prompt, const GenerationOptions& options,
                          const ForwardContext& ctx) {
  NoGradGuard no_grad;
  const bool from_embeds = prompt.inputs_embeds.defined();
  VLP_CHECK(from_embeds != prompt.input_ids.defined(), "generate: pass exactly one of input_ids and inputs_embeds");
  const Tensor& first = from_embeds ? prompt.inputs_embeds : prompt.input_ids;
  VLP_CHECK(first.dim() == (from_embeds ? 3 : 2), "generate: expected input_ids [B, T] or inputs_embeds [B, T, D], got ",
            shape_str(first.shape()));
  const int64_t B = first.size(0), beams = std::max<int64_t>(options.num_beams, 1);
  ForwardContext dctx = repeat_context(ctx, B, beams);
  // With embeddings the decoding loop starts from an empty id sequence (as transformers: only new tokens are
  // returned) and the embeddings enter on the first call.
  Tensor embeds = from_embeds ? repeat_rows(prompt.inputs_embeds, beams) : Tensor();
  Tensor embeds_mask = from_embeds ? repeat_rows(prompt.attention_mask, beams) : Tensor();
  auto run = std::make_shared<CachedRun>();
  DecodingModel dm;
  dm.vocab_size = model.config.vocab_size;
  dm.max_positions = from_embeds ? 0 : model.config.n_positions;
  dm.device = model.transformer.wte.weight.device();
  dm.step = [&model, &dctx, &embeds, &embeds_mask, run, use_cache = options.use_cache](const Tensor& ids,
                                                                                       const Tensor& mask) {
    const int64_t N = ids.size(0), T = ids.size(1);
    GPT2Input in;
    if (!use_cache) *run = CachedRun();
    if (!run->started) {
      // First call (every call without a cache): the whole prompt.
      if (embeds.defined()) {
        in.inputs_embeds = T > 0 ? concat({embeds, model.transformer.wte.forward(ids)}, 1) : embeds;
        in.attention_mask = concat_masks(embeds_mask, embeds.size(1), Tensor(), T, N, embeds.device());
      } else {
        in.input_ids = ids;
        in.attention_mask = mask;
      }
      if (in.attention_mask.defined()) in.position_ids = positions_from_mask(in.attention_mask, 0);
    } else {
      // Later calls: the new tokens, the mask the model used so far extended with ones.
      const int64_t fresh = T - run->consumed;
      in.input_ids = narrow(ids, 1, run->consumed, fresh);
      if (run->mask.defined()) {
        run->mask = concat({run->mask, ones({N, fresh}, run->mask.dtype(), run->mask.device())}, 1);
        in.attention_mask = run->mask;
        in.position_ids = positions_from_mask(run->mask, run->mask.size(1) - fresh);
      }
    }
    Tensor used_mask;
    Tensor hidden = model.transformer.forward(in, &run->cache, dctx, &used_mask);
    if (!run->started) run->mask = used_mask;
    run->started = true;
    run->consumed = T;
    return select(model.lm_logits(narrow(hidden, 1, hidden.size(1) - 1, 1)), 1, 0);
  };
  dm.reorder = [run](const Tensor& rows) {
    run->cache.reorder(rows);
    if (run->mask.defined()) run->mask = index_select(run->mask, 0, rows);
  };
  Tensor ids = from_embeds ? zeros({B * beams, 0}, DType::I64, dm.device) : repeat_rows(prompt.input_ids, beams);
  Tensor mask = from_embeds ? Tensor() : repeat_rows(prompt.attention_mask, beams);
  return decode_loop(dm, ids, mask, options, model.config.tokens);
}

GenerationOutput generate(const T5ForConditionalGeneration& model, const EncoderInput& input,
                          const GenerationOptions& options, const ForwardContext& ctx) {
  NoGradGuard no_grad;
  return generate(model, model.encode(input, ctx), options, ctx);
}

GenerationOutput generate(const BartForConditionalGeneration& model, const EncoderInput& input,
                          const GenerationOptions& options, const ForwardContext& ctx) {
  NoGradGuard no_grad;
  return generate(model, model.encode(input, ctx), options, ctx);
}

GenerationOutput generate(const T5ForConditionalGeneration& model, const EncoderOutput& encoder_output,
                          const GenerationOptions& options, const ForwardContext& ctx) {
  return generate_seq2seq(model, encoder_output, options, ctx, 0);
}

GenerationOutput generate(const BartForConditionalGeneration& model, const EncoderOutput& encoder_output,
                          const GenerationOptions& options, const ForwardContext& ctx) {
  return generate_seq2seq(model, encoder_output, options, ctx, model.config.max_position_embeddings);
}

}  // namespace vlp
