// P-tuning (Liu et al., "GPT Understands, Too", 2021; spec/peft.md §4.15): prompt tuning whose virtual
// tokens are produced by a reparameterisation of the table, MLP: Linear(d, h) ReLU Linear(h, h) ReLU
// Linear(h, d), h = encoder_hidden_size. Saved as the MLP's output (prompt_tuning.h). The LSTM encoder of HF
// is not implemented (refused with a message).
#pragma once
#include "models/peft/prompt_tuning.h"

namespace vlp::peft {
void attach_p_tuning(AttachContext& ctx);
}
