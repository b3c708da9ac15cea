#pragma once
// Running an EvalConfig over an EvalModel: the next action of every trained assistant turn of the
// records (teacher-forced: the gold history rendered by the template, a greedy reply to the
// template's stop, scored by score_action), hallucination on negatives, the records' loss per
// source and capability, and multiple-choice files by likelihood. `agenttune eval` runs it on a
// plain model; training runs it at train.eval_interval on the sharded one, each rank decoding its
// share (turn k goes to rank k % world) and the counts summed over the ranks, so every rank ends
// with the numbers one process computes.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agenttune/chat/template.h"
#include "agenttune/data/heldout.h"
#include "agenttune/eval/action_score.h"
#include "agenttune/eval/eval_config.h"
#include "agenttune/eval/eval_model.h"
#include "agenttune/tokenizer/tokenizer.h"

namespace agenttune::eval {

// What an EvalConfig names, loaded once (a training run evaluates many times).
struct EvalInputs {
  EvalConfig cfg;
  std::vector<HeldOutRecord> records;  // in file order, after the `tasks` filter
  std::unique_ptr<Tokenizer> tok;      // with the template's added tokens
  std::unique_ptr<ChatTemplate> tmpl;  // null without records
  // Where a reply ends: the template's end of turn, then the model's end-of-sequence ids it lacks.
  std::vector<int64_t> stop_ids;
};

// `default_tokenizer`: used when cfg.tokenizer is empty (the model folder, which Tokenizer::load reads, or
// the training data's). `vocab_size`: the model's, which every id the template needs must fit.
// `eos_ids`: the model's end-of-sequence ids (generation_eos_token_ids()), where a reply ends too, as
// transformers' generate stops at every one of them (Llama-3.1-Instruct's <|eom_id|>, a base Qwen's
// <|endoftext|>).
EvalInputs load_eval_inputs(const EvalConfig& cfg, const std::filesystem::path& default_tokenizer,
                            int64_t vocab_size, const std::vector<int64_t>& eos_ids);

// One scored assistant turn.
struct TurnResult {
  AgentTask task = AgentTask::Chat;
  bool negative = false;
  std::string record_id;
  size_t turn = 0;            // index into the conversation's turns
  std::string last_turn;      // the prompt's last turn (what the reply answers)
  std::string reply;          // decoded, the stop id left out
  std::string gold;
  ActionScore score;
  bool hallucinated = false;  // on a negative: the reply calls a tool (hallucinates())
};

// Counts of one task, summed over the ranks.
struct TaskCounts {
  AgentTask task = AgentTask::Chat;
  int64_t positives = 0, negatives = 0;
  int64_t format_valid = 0, action_match = 0;  // over positives
  int64_t refused = 0;  // positives whose gold calls a tool answered without one (wrongly_refuses())
  int64_t tool_checked = 0, tool_valid = 0;  // positives whose reply names a tool; of those, one offered
  int64_t hallucinated = 0;                                 // over negatives
};

struct LossRow {
  std::string group;  // "source", "task" or "capability"
  std::string name;
  double loss = 0;    // mean over the trained tokens
  int64_t tokens = 0;
};

struct ChoiceRow {
  std::string name;
  int64_t questions = 0;
  double acc = 0, acc_norm = 0;
};

struct EvalResults {
  std::vector<TaskCounts> tasks;  // in AgentTask order, tasks with no scored turn left out
  // This rank's scored turns in record order: all of them in a world of one (`agenttune eval`).
  std::vector<TurnResult> turns;
  int64_t skipped_too_long = 0;  // turns whose prompt plus max_new_tokens exceed the model's context
  std::vector<LossRow> losses;
  std::vector<ChoiceRow> choices;
};

// Collective on a sharded model: every rank calls it with the same inputs.
EvalResults run_eval(EvalModel& model, const EvalInputs& in);

// eval/<task>/<metric> (fractions; eval/<task>/loss), eval/source_<name>/loss, eval/capability_<name>/loss,
// eval/<choice file>/acc and acc_norm:
// the scalars written to metrics.jsonl and TensorBoard; a metric with no turn to count is left out.
std::vector<std::pair<std::string, double>> eval_scalars(const EvalResults& r);

}  // namespace agenttune::eval
