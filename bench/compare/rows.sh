# The comparison rows shared by run_cpu.sh and run_gpu.sh (sourced): per row the HF model config, the PEFT
# config (empty = full fine-tuning) and extra train_step / bench_torch.py flags. ROWS defaults to all of them.
P=bench/compare/peft
declare -A MODEL PEFT EXTRA
MODEL[gpt2-full]=configs/hf/gpt2.json;              PEFT[gpt2-full]=
MODEL[gpt2-lora]=configs/hf/gpt2.json;              PEFT[gpt2-lora]=$P/gpt2_lora_r16.json
MODEL[t5-base-lora]=configs/hf/t5-base.json;        PEFT[t5-base-lora]=$P/t5_lora_r8.json
MODEL[bart-base-lora]=configs/hf/bart-base.json;    PEFT[bart-base-lora]=$P/bart_lora_r8.json
MODEL[gpt2-adapter]=configs/hf/gpt2.json;           PEFT[gpt2-adapter]=$P/adapter_rf8.json
MODEL[t5-base-adapter]=configs/hf/t5-base.json;     PEFT[t5-base-adapter]=$P/adapter_rf8.json
MODEL[bart-base-adapter]=configs/hf/bart-base.json; PEFT[bart-base-adapter]=$P/adapter_rf8.json
MODEL[vl-bart-base-adapter]=configs/hf/bart-base.json
PEFT[vl-bart-base-adapter]=$P/vl_bart_adapter_single.json; EXTRA[vl-bart-base-adapter]="--visual 36"
MODEL[vit-b16-lora]=configs/hf/vit-base-patch16-224.json; PEFT[vit-b16-lora]=$P/vit_lora_r16.json
ROWS=${ROWS:-"gpt2-full gpt2-lora t5-base-lora bart-base-lora gpt2-adapter t5-base-adapter bart-base-adapter
vl-bart-base-adapter vit-b16-lora"}
