// The one-line meaning of every config key, per struct (the struct whose visit() offers the key).
// `agenttune config-docs` fails for a key missing here, so a new key cannot go undocumented: add
// its line, then regenerate docs/config.md with `build/agenttune config-docs > docs/config.md`.
#include "config_meanings.h"

#include <fmt/ranges.h>

#include "agenttune/chat/template.h"
#include "agenttune/data/prepare_config.h"
#include "agenttune/data/sft_prepare.h"
#include "agenttune/model/init_config.h"
#include "agenttune/train/train_config.h"

namespace agenttune::cli {

namespace {

void train_meanings(ConfigMeanings& m) {
  m.add<TrainConfig>({
      {"output_dir", "The run's folder: checkpoints, metrics.jsonl, tb/, the resolved config.yaml, the run lock."},
      {"model", "The model to train: a fresh one of `shape`, or a checkpoint folder to continue from."},
      {"data", "The token shards to train on, their mixture and how they are cut into sequences."},
      {"train", "Steps, batch size, optimizer, learning-rate schedule, bad-step handling, logging."},
      {"checkpoint", "When and where training state is saved."},
      {"metrics", "What is recorded besides metrics.jsonl."},
      {"dist", "How ranks share the model (torchrun or Slurm launches; one process runs alone)."},
      {"eval", "Agent metrics every `train.eval_interval` steps on the current weights, with the keys of an "
               "`agenttune eval` config (below); each rank decodes its share, rank 0 writes eval/<task>/<metric> to "
               "metrics.jsonl and TensorBoard. Unset = none."},
  });
  m.add<ModelSection>({
      {"init_from", "A Hugging Face or Meta model folder to continue from; empty = a fresh model of `shape`."},
      {"shape", "The architecture (Hugging Face config.json names). Required without `init_from`; with it, "
                "optional and then it must equal the folder's architecture."},
      {"init_seed", "Seed of a fresh model's random initialisation."},
      {"activation_checkpointing",
       "How much of each decoder layer the backward pass recomputes instead of keeping: `none`; `selective` "
       "(the RMSNorms and the SwiGLU product: about 40 % less activation memory, the same bits, a few % more "
       "time); `full` (each layer kept as its input only and re-run whole: about a third more compute). "
       "`agenttune plan` prints each mode's memory. Was a boolean: true is `full`, false `none`."},
      {"compute_dtype", "The dtype forward and backward run in; the optimizer's master weights and the checkpoints "
                        "stay float32. float16 is refused (no loss scaling)."},
      {"adapter", "Low-rank adapters (LoRA) on the decoder's projections with the base frozen; kind none trains "
                  "every weight."},
  });
  m.add<AdapterConfig>({
      {"kind", "none: full fine-tuning. lora: the base (init_from or init_seed) frozen in compute_dtype, only the "
               "adapters trained (float32 masters, AdamW); checkpoints hold the adapters. qlora: as lora with the "
               "seven projections of every layer stored as NF4 (bitsandbytes' 4-bit NormalFloat: blocks of 64, "
               "double-quantised absmax, about 0.52 bytes per weight), sharded and gathered as bytes and "
               "dequantised into compute_dtype only while each matmul runs; embeddings, norms and the head stay "
               "in compute_dtype."},
      {"rank", "r: the adapters' inner dimension (A is [r, in], B is [out, r]), as PEFT's `r`."},
      {"alpha", "PEFT's `lora_alpha`: the adapter's output is scaled by alpha / rank (alpha / sqrt(rank) with "
                "rslora)."},
      {"dropout", "Dropout on each adapter's input while training, in [0, 1) (PEFT's `lora_dropout`); the base path "
                  "sees the input undropped."},
      {"target_modules", "The projections that get an adapter, by PEFT's names: any of q_proj, k_proj, v_proj, o_proj, "
                         "gate_proj, up_proj, down_proj (default all seven), in every layer."},
      {"init_seed", "Seed of A's initial values (PEFT's Kaiming-uniform, drawn per parameter name, so any device and "
                    "world size start alike); B starts at zero, so step 0 computes exactly the base."},
      {"rslora", "Rank-stabilised LoRA: scale alpha / sqrt(rank) instead of alpha / rank (PEFT's `use_rslora`)."},
  });
  m.add<DataSection>({
      {"sources", "The corpora to mix: folders `agenttune prepare` wrote, or Megatron indexed datasets."},
      {"weight_unit", "What `sources[].weight` and `agent_share` count: trained tokens or samples (documents, "
                      "conversations)."},
      {"agent_share", "AgentTuning's eta: the share (in weight_unit) of the sources marked `agent: true`, the rest "
                      "going to the others; exclusive with explicit weights."},
      {"seq_len", "Tokens per training sequence."},
      {"attention", "causal: a packed sequence attends across its documents; document: only within each one."},
      {"packing", "pack: documents are concatenated into full sequences; pad: one document per sequence, padded."},
      {"overlength", "A conversation (SFT source) longer than seq_len: truncate after its last whole answer that "
                     "fits, drop it, or window (its head plus later turns, as more rows). Never split across rows."},
      {"validation_fraction", "Share of documents held out for validation (chosen by a seeded hash); needed by "
                              "`train.eval_interval`."},
      {"tokenizer", "The tokenizer the shards must have been made with (a SentencePiece .model, a byte-level BPE "
                    "tokenizer.json or a model folder; checked by fingerprint); empty = not checked."},
  });
  m.add<MixtureSource>({
      {"name", "The source's name in logs, metrics (`share/NAME`) and checkpoints."},
      {"path", "A prepared folder, or a Megatron dataset's prefix (PATH.bin + PATH.idx)."},
      {"format", "prepared: a folder `agenttune prepare` wrote; megatron: a Megatron-LM indexed dataset."},
      {"vocab_size", "format: megatron only (required): the vocabulary of the tokenizer that made the files."},
      {"tokenizer_sha256", "format: megatron only (required): the sha256 of the tokenizer that made the files."},
      {"weight", "The source's relative share of training (in data.weight_unit)."},
      {"agent", "Agent data, for data.agent_share."},
  });
  m.add<TrainSection>({
      {"max_steps", "Optimizer steps of the run (the schedule's length)."},
      {"epochs", "> 0: train this many passes over the data instead of max_steps (a pass is every source once)."},
      {"seed", "Seed of the data order."},
      {"micro_batch_size", "Sequences per forward/backward on one rank."},
      {"global_batch_sequences", "Sequences per optimizer step over all ranks (set this or global_batch_tokens)."},
      {"global_batch_tokens", "Tokens per optimizer step over all ranks, rounded to whole sequences (set this or "
                              "global_batch_sequences)."},
      {"lr", "Peak learning rate."},
      {"min_lr_ratio", "The rate decays to `lr * min_lr_ratio` at max_steps."},
      {"warmup_steps", "Steps of linear warmup to lr."},
      {"warmup_start_ratio", "Warmup starts at `lr * warmup_start_ratio` (0 = from zero)."},
      {"decay", "The rate's decay after warmup."},
      {"beta1", "AdamW's beta1."},
      {"beta2", "AdamW's beta2."},
      {"eps", "AdamW's epsilon."},
      {"weight_decay", "AdamW's decoupled weight decay."},
      {"clip_grad_norm", "Clip the global gradient norm to this; 0 = no clipping."},
      {"max_nonfinite_in_a_row", "Bad steps in a row before the run stops."},
      {"max_rollbacks", "on_nonfinite: rollback: rollbacks to one checkpoint before the run stops."},
      {"on_nonfinite", "What a non-finite (or spiking) step does: skip its update, roll back to the last good "
                       "checkpoint, or stop."},
      {"spike_zscore", "> 0: a loss this many standard deviations above the recent mean counts as non-finite; 0 = "
                       "off."},
      {"spike_window", "Accepted steps the spike detector's mean and deviation are taken over."},
      {"log_interval", "Write a metrics row every this many steps (and at the last step and every evaluated one)."},
      {"eval_interval", "Every this many steps: the validation loss (with data.validation_fraction) and the `eval:` "
                        "section's metrics (docs/eval.md), on the current weights; 0 = never. Needs one of the two."},
      {"eval_batches", "Micro-batches of held-out data per evaluation."},
      {"threads", "Intra-op threads per rank; 0 = LibTorch's default."},
      {"memory_check", "Before any weight is read, the run's memory plan (as `agenttune plan` computes it) against "
                       "the device's free memory and the host's available memory (offloaded state; all of it on "
                       "CPU): error = refuse with exit code 2, the plan and the setting changes that would fit; "
                       "warn = log the same and go on; off = no check."},
  });
  m.add<CheckpointSection>({
      {"interval", "Save every this many steps; also at the end and on SIGTERM/SIGINT."},
      {"keep_last", "Complete checkpoints kept; older ones are deleted."},
      {"dir", "Where checkpoints go; empty = `<output_dir>/checkpoints`."},
  });
  m.add<MetricsSection>({
      {"tensorboard", "Also write TensorBoard events to `<output_dir>/tb`."},
      {"peak_tflops", "The device's dense bf16 peak in TFLOP/s, for MFU; 0 = from the built-in table by device "
                      "name."},
      {"host_syncs", "Count each step's host syncs with CUDA's sync debug mode (a GPU diagnostic; an error on "
                     "the CPU)."},
      {"phase_times", "Time each step's phases (data, forward, backward, reduce, optimizer, other), write them "
                      "as `phase_<name>_seconds` and print a per-phase table at the end. Each phase ends by "
                      "draining the device, so a profiled step loses the overlap of a real one: a diagnostic."},
  });
  m.add<DistSection>({
      {"strategy", "full_shard (ZeRO-3/FSDP), shard_grad_op (ZeRO-2), no_shard (DDP) or hybrid_shard."},
      {"backend", "The collectives' library: auto = NCCL on CUDA, Gloo on CPU."},
      {"device", "auto (`cuda:<local_rank>` when CUDA is available, else cpu), cpu, cuda or `cuda:N`."},
      {"timeout_s", "A collective slower than this fails on every rank."},
      {"connect_timeout_s", "How long ranks wait for each other to join at startup (after model loading)."},
      {"hybrid_group_size", "hybrid_shard: ranks that shard together; 0 = one node."},
      {"prefetch", "Overlap collectives with compute (bit-identical results either way)."},
      {"reshard_after_forward", "full_shard/hybrid_shard: free gathered parameters after each forward and gather "
                                "again for backward (less memory, one more all-gather)."},
      {"offload", "none, or optimizer: fp32 master weights and AdamW moments in (pinned) host memory, gradients "
                  "streamed to the host, AdamW on the CPU; the device keeps compute-dtype weights (same losses)."},
      {"single_rank_path", "resident, or per_unit: a shard group of one (one process) under full_shard/hybrid_shard "
                           "gathers, frees and reduce-scatters each unit through the backend like a larger group "
                           "(bit-identical results; the ZeRO-3 path on one GPU). No effect on larger groups."},
  });
}

void model_meanings(ConfigMeanings& m) {
  m.add<InitConfig>({
      {"model", "The architecture (Hugging Face config.json names)."},
      {"seed", "Seed of the random initialisation."},
      {"tokenizer", "Tokenizer files copied into the output folder: a SentencePiece .model, a byte-level BPE "
                    "tokenizer.json (with the tokenizer_config.json beside it) or a folder holding either; empty = "
                    "none."},
  });
  m.add<LlamaConfig>({
      {"model_type", "The Hugging Face architecture: llama (LlamaForCausalLM), qwen2 (Qwen2ForCausalLM: Qwen2.5, "
                     "biases on q/k/v) or qwen3 (Qwen3ForCausalLM: per-head RMSNorm on q and k before RoPE)."},
      {"vocab_size", "Tokens in the vocabulary (embedding and output rows)."},
      {"hidden_size", "Width of the residual stream."},
      {"intermediate_size", "Width of the SwiGLU feed-forward layer."},
      {"num_hidden_layers", "Transformer layers."},
      {"num_attention_heads", "Query heads."},
      {"num_key_value_heads", "Key/value heads; fewer than the query heads is grouped-query attention."},
      {"head_dim", "Width of one head; 0 = hidden_size / num_attention_heads."},
      {"max_position_embeddings", "Positions the model is trained for."},
      {"rope_theta", "RoPE's base."},
      {"rope_scaling_type", "HF rope_scaling's type: linear (positions stretch by rope_scaling_factor) or llama3 "
                            "(Llama-3.1's per-frequency rescaling with the rope_*_freq_factor keys)."},
      {"rope_scaling_factor", "RoPE scaling factor (linear: positions stretch by this; llama3: long wavelengths "
                              "are divided by it); 1 with linear = none."},
      {"rope_low_freq_factor", "llama3 rope scaling: wavelengths above original_max_position_embeddings / this "
                               "are divided by the factor."},
      {"rope_high_freq_factor", "llama3 rope scaling: wavelengths below original_max_position_embeddings / this "
                                "are kept; those between are smoothed."},
      {"rope_original_max_position_embeddings", "llama3 rope scaling: the context the model was pretrained for."},
      {"attention_bias", "Biases on q/k/v/o (Llama's and Qwen3's attention_bias; qwen2 always has q/k/v biases "
                         "and refuses this key set true)."},
      {"rms_norm_eps", "RMSNorm's epsilon."},
      {"tie_word_embeddings", "The output layer shares the embedding's weights."},
      {"initializer_range", "Standard deviation of the random initialisation."},
      {"bos_token_id", "Beginning-of-sequence token."},
      {"eos_token_id", "End-of-sequence token, or a list of the ids that end generation as config.json writes it "
                       "(Llama-3.1-Instruct's [128001, 128008, 128009]); generate, chat and eval stop at every one."},
      {"pad_token_id", "Padding token; null = none."},
      {"dtype", "The dtype the weights are saved in (training keeps float32 masters)."},
  });
}

void prepare_meanings(ConfigMeanings& m) {
  m.add<PrepareConfig>({
      {"tokenizer", "What to tokenize with: a SentencePiece .model, a byte-level BPE tokenizer.json (Llama-3, "
                    "Qwen), or a model folder holding either."},
      {"corpora", "The corpora to tokenize, one output folder each."},
      {"add_bos", "Start each document with BOS."},
      {"add_eos", "End each document with EOS."},
      {"shard_tokens", "Roll to a new shard after this many tokens."},
      {"threads", "Tokenizer threads; 0 = all cores."},
      {"on_error", "A bad record (malformed JSON, missing text field): fail, or skip it and count it."},
  });
  m.add<CorpusSpec>({
      {"name", "The corpus's name in logs and its manifest."},
      {"inputs", "Files, folders or globs of JSON Lines or text (.gz, .zst too)."},
      {"output", "The prepared folder to write (a training source)."},
      {"text_field", "The JSON Lines field holding a document's text."},
  });
}

void sft_meanings(ConfigMeanings& m) {
  m.add<SftPrepareConfig>({
      {"tokenizer", "The base tokenizer: a SentencePiece .model, a byte-level BPE tokenizer.json (Llama-3, Qwen) or a "
                    "model folder holding either."},
      {"template", fmt::format("The chat template conversations are rendered with: {}.", fmt::join(template_names(), ", "))},
      {"default_system", "The system prompt of conversations without one; null = the template's own default."},
      {"datasets", "The chat/agent datasets to read, one prepared folder each."},
      {"transforms", "The Agent-FLAN transforms, applied to the datasets with `transform: true`."},
      {"format_following_output", "The prepared folder for the generated format-following samples (required "
                                  "when that stage produces samples)."},
      {"negatives_output", "The prepared folder for the generated negative samples (required when that stage "
                           "produces samples)."},
      {"negatives_holdout", "Generated negatives held out for eval as `datasets[].holdout` does (task agentflan, "
                            "flagged negative), written to negatives_output/heldout.jsonl."},
      {"max_seq_len", "Tokens per rendered sample; 0 = no limit."},
      {"overlength", "A rendering longer than max_seq_len: truncate after its last whole answer that fits, drop "
                     "it, or window (more samples, each the head plus later turns)."},
      {"seed", "Seed of the hold-outs, max_samples subsets and fractional upsampling (the transforms have their own)."},
      {"threads", "Rendering threads; 0 = all cores. The output does not depend on it."},
      {"shard_tokens", "Roll to a new shard after this many tokens."},
      {"progress", "Log one line per dataset."},
  });
  m.add<SftDatasetConfig>({
      {"name", "The dataset's name in reports, messages and the conversations' source."},
      {"paths", "Files, or folders of `*.json` / `*.jsonl` (their schemas: docs/datasets.md)."},
      {"format", "The records' schema; auto decides per file from its first record."},
      {"policies", "How the reader treats records that do not fit the schema."},
      {"output", "This dataset's prepared folder (a training source)."},
      {"max_samples", "Keep a seeded random subset of this many conversations; 0 = all."},
      {"upsample", "Write each kept sample this many times (fractions write a seeded subset once more)."},
      {"transform", "Apply the Agent-FLAN transforms (pooled over all datasets marked so)."},
      {"holdout", "Records held out for eval per task (AgentInstruct's os/db/kg/alfworld/webshop/mind2web from the "
                  "id, toolbench, agentflan, chat; negatives apart): 0 = none, a share in (0, 1), or a whole number "
                  "per task. Seeded, before max_samples; written to output/heldout.jsonl, never trained on."},
      {"tool_calls", "How tool calls reach the template: native = ReAct steps calling a listed tool become "
                     "structured calls printed in the family's own format (the templates that render tools: llama-3, "
                     "qwen2.5, qwen3, qwen3-no-think; not with transform: true); text = as the data writes them; auto = native where the template renders "
                     "tools and the dataset is not transformed. Counts in the report (docs/datasets.md)."},
  });
  m.add<ReadPolicies>({
      {"alternation", "User/assistant turns that do not alternate: error, merge same-role turns, or drop the "
                      "record."},
      {"bad_record", "A malformed record (wrong types, missing fields, empty content, no assistant turn): error, "
                     "or drop it (counted)."},
      {"unknown_roles", "A turn whose role is not known: error, or drop the turn."},
      {"drop_leading_assistant", "Drop an assistant turn that opens the conversation (FastChat's rule for "
                                 "ShareGPT)."},
      {"toolbench_last_assistant_only", "ToolBench: train only each record's last assistant turn (the earlier "
                                        "ones are context), as ToolLLaMA did."},
  });
}

void transform_meanings(ConfigMeanings& m) {
  m.add<TransformConfig>({
      {"align", "Rewrite ReAct trajectories into multi-turn conversations (Agent-FLAN's format alignment)."},
      {"balance", "Sub-sample trained turns per capability (Agent-FLAN's capability balancing)."},
      {"format_following", "Generate samples that ask for a tool call in JSON or as plain text."},
      {"negatives", "Generate negative samples: queries answered without calling a tool."},
  });
  m.add<AlignConfig>({
      {"enabled", "Run this stage."},
      {"seed", "Seed of this stage's choices."},
      {"sources", "Datasets (by name) to rewrite; empty = every conversation."},
      {"keep_react_fraction", "Share of ReAct conversations kept verbatim, so ReAct can still be asked for."},
      {"tool_elicits", "User turns that ask which tool comes next (one drawn per conversation)."},
      {"action_elicits", "User turns that ask for the next action."},
      {"argument_elicits", "User turns that ask for the arguments."},
      {"answer_elicits", "User turns that ask for the final answer."},
  });
  m.add<BalanceConfig>({
      {"enabled", "Run this stage."},
      {"seed", "Seed of this stage's choices."},
      {"weights", "Share of trained turns of each capability that keep their loss (0 to 1)."},
      {"drop_untrained", "Drop a conversation left with no trained turn (counted)."},
  });
  m.add<CapabilityWeights>({
      {"reasoning", "Share kept of reasoning turns (thoughts)."},
      {"retrieval", "Share kept of retrieval turns (tool and action calls)."},
      {"understanding", "Share kept of understanding turns (arguments)."},
      {"instruction_following", "Share kept of instruction-following turns (ReAct kept verbatim, answers)."},
  });
  m.add<FormatFollowingConfig>({
      {"enabled", "Run this stage."},
      {"seed", "Seed of this stage's choices."},
      {"samples", "At most this many samples (fewer when there are fewer distinct tool calls)."},
      {"json_fraction", "Share asking for a JSON tool call; the rest ask for the tool's name as plain text."},
      {"json_requests", "Phrasings of the JSON request."},
      {"string_requests", "Phrasings of the plain-text request."},
      {"tools_header", "The line introducing the tool list in the system turn."},
      {"source", "The generated samples' source name."},
  });
  m.add<NegativesConfig>({
      {"enabled", "Run this stage."},
      {"seed", "Seed of this stage's choices."},
      {"pairs", "Queries with their plain answers."},
      {"pairs_file", "More pairs: JSON Lines or a JSON array of {\"query\": ..., \"answer\": ...}."},
      {"with_tools_fraction", "Share of pairs shown with an unrelated ToolBench tool list; the rest get no tools."},
      {"max_tools", "Tools listed per sample with tools."},
      {"tools_header", "The line introducing the tool list in the system turn."},
      {"system_without_tools", "The system turn of samples without tools; empty = none."},
      {"source", "The generated samples' source name."},
  });
  m.add<NegativePair>({
      {"query", "The user's query."},
      {"answer", "The plain reply: no tool call, no ReAct keywords."},
  });
}

void eval_meanings(ConfigMeanings& m) {
  m.add<eval::EvalConfig>({
      {"records", "Conversations to score: held-out files `prepare` wrote, or dataset files."},
      {"template", "The chat template the model was tuned with: renders each gold history, its end of turn "
                   "ends each reply. Required with records."},
      {"tokenizer", "A SentencePiece .model, a byte-level BPE tokenizer.json or a folder holding either; empty = "
                    "the model folder's (in training: the data's tokenizer, else init_from's)."},
      {"tasks", "Score only these tasks (os, db, kg, alfworld, webshop, mind2web, toolbench, agentflan, chat); "
                "empty = every task the records hold."},
      {"max_new_tokens", "Tokens a reply may have; a turn whose prompt leaves less room in the model's context is "
                         "left out and counted."},
      {"batch_size", "Prompts decoded together (greedy, one KV cache)."},
      {"max_turns_per_task", "Score at most this many turns per task, the first in record order; 0 = all."},
      {"next_action", "Decode and score the next action of every trained assistant turn (teacher-forced)."},
      {"heldout_loss", "The loss over the records' trained tokens, per source, per task and per capability."},
      {"multiple_choice", "Multiple-choice files scored by likelihood, as lm-evaluation-harness does."},
  });
  m.add<eval::RecordFile>({
      {"path", "A heldout.jsonl (or the prepared folder holding one), or a dataset file."},
      {"format", "heldout (task and negative flag per record), or the dataset's format: agentinstruct (task from "
                 "the id), toolbench, agentflan, sharegpt, openai."},
      {"negative", "A dataset file of negatives: a reply there should call no tool (counted as hallucination when "
                   "it does)."},
  });
  m.add<eval::ChoiceFile>({
      {"name", "The row's name in the report and in eval/<name>/acc; empty = the file's stem."},
      {"path", "JSONL of {question, choices, answer}: the questions scored."},
      {"dev_path", "Where the k shots come from (its first `shots` rows); empty = the first `shots` rows of `path`, "
                   "then not scored."},
      {"shots", "Solved examples before each question (k-shot)."},
      {"description", "Text before the shots; {subject} becomes the question's subject (lm-eval's MMLU: \"The "
                      "following are multiple choice questions (with answers) about {subject}.\\n\\n\"); empty = "
                      "none."},
      {"style", "letters: MMLU's prompt, the options lettered and the continuations \" A\", \" B\", ... (acc_norm "
                "equals acc); texts: \"Question: ...\\nAnswer:\" and each choice's own text as its continuation "
                "(ARC-style), where acc_norm (per character) can pick another choice than acc."},
  });
}

}  // namespace

ConfigMeanings config_meanings() {
  ConfigMeanings m("src/cli/config_meanings.cpp");
  train_meanings(m);
  model_meanings(m);
  prepare_meanings(m);
  sft_meanings(m);
  transform_meanings(m);
  eval_meanings(m);
  return m;
}

}  // namespace agenttune::cli
