// Method combinations (spec/peft.md §4.23): several methods trained together as one adapter, as
// adapter-hub/adapters' ConfigUnion presets do. Each part is an ordinary method of the table (prefix
// tuning, bottleneck adapter, LoRA) attached under the same adapter name at its own sites, so one
// adapter name activates, saves and loads them all; the file is vlpeft's own (spec §6.5), tensor keys by
// the default rule.
//
//   VLPEFT_MAM      He et al. 2022, "mix-and-match": prefix tuning on every attention + a parallel FFN
//                   adapter, with adapters' `mam` defaults: 30 prefix tokens through the reparameterisation
//                   MLP of width 800, parallel adapter rf 2, s = 4, ReLU, "mam_adapter" init (W_up = 0).
//   VLPEFT_UNIPELT  Mao et al. 2022: prefix (10 tokens, MLP width 512) + Pfeiffer adapter (rf 16, ReLU,
//                   "bert" init) + LoRA (r 8, default targets), each gated (gate.h): the gated LoRA uses
//                   g instead of α/r, the adapter's A(z) and the prefix keys/values are multiplied by g.
//
// Config: {"peft_type": "VLPEFT_UNIPELT", "prefix_tuning": {...}, "adapter": {...}, "lora": {...}}; each
// part's object overrides that part's defaults with fields of its own method (VLPEFT_PREFIX_TUNING,
// VLPEFT_ADAPTER, LORA: e.g. {"adapter": {"bottleneck_dim": 512}}), and a part can be switched off with
// false ({"lora": false}). Not mergeable (prefixes, adapters and gates act on activations).
#pragma once
#include "models/peft/peft.h"

namespace vlp::peft {

void attach_mam(AttachContext& ctx);
void attach_unipelt(AttachContext& ctx);

}  // namespace vlp::peft
