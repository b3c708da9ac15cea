#pragma once
// What `agenttune eval --config eval.yaml` runs, and the same struct as the train config's `eval:`
// section (run at train.eval_interval on the current weights). Torch-free: the train config
// includes it. Each metric's exact rule is in docs/eval.md.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "agenttune/chat/agent_task.h"
#include "agenttune/config/scalars.h"
#include "agenttune/eval/choice_style.h"

namespace agenttune::eval {

// A file of conversations to score.
struct RecordFile {
  std::filesystem::path path;
  // heldout: a heldout.jsonl that `agenttune prepare` wrote (task and negative flag per record);
  // otherwise a dataset format the readers know (agentinstruct, toolbench, agentflan, sharegpt,
  // openai), each record's task taken from its id (AgentInstruct) or the format.
  std::string format = "heldout";
  // For a dataset file: every record is a negative (a reply should not call a tool).
  bool negative = false;
};

template <class V>
void visit(V& v, RecordFile& r) {
  v("path", r.path);
  v("format", r.format);
  v("negative", r.negative);
}

// A multiple-choice file (MMLU's layout in JSONL: question, choices, answer), scored by the summed
// log-likelihood of each choice as lm-evaluation-harness does.
struct ChoiceFile {
  std::string name;                 // the report's row (default: the file's stem)
  std::filesystem::path path;       // the questions scored
  std::filesystem::path dev_path;   // where the k shots come from (empty: the first k of `path`, not scored)
  int64_t shots = 0;
  // Put before the shots; "{subject}" becomes the question's subject (lm-eval's MMLU: "The following
  // are multiple choice questions (with answers) about {subject}.\n\n").
  std::string description;
  // letters: MMLU's lettered options, continuations " A", " B", ... (acc_norm equals acc);
  // texts: the choices' own text as continuations (ARC-style), where acc_norm can differ.
  ChoiceStyle style = ChoiceStyle::Letters;
};

template <class V>
void visit(V& v, ChoiceFile& c) {
  v("name", c.name);
  v("path", c.path);
  v("dev_path", c.dev_path);
  v("shots", c.shots);
  v("description", c.description);
  v("style", c.style);
}

struct EvalConfig {
  std::vector<RecordFile> records;
  // The chat template the model was tuned with (agentlm, agent-flan, toolllama, chatml, ...): it
  // renders each gold history and its stop ids end each reply.
  std::string chat_template;
  // A SentencePiece .model, a byte-level BPE tokenizer.json or a folder; empty = the model folder's.
  std::filesystem::path tokenizer;
  std::vector<AgentTask> tasks;  // only these tasks (os, db, kg, ...); empty = every task present
  int64_t max_new_tokens = 96;
  int64_t batch_size = 8;          // prompts decoded together
  int64_t max_turns_per_task = 0;  // scored assistant turns per task, the first ones; 0 = all
  bool next_action = true;         // decode and score the next action of every trained turn
  bool heldout_loss = true;        // loss over the records' trained tokens, per source and capability
  std::vector<ChoiceFile> multiple_choice;

  // Whether there is anything to run.
  bool empty() const { return records.empty() && multiple_choice.empty(); }
  void validate(const std::string& source) const;
};

template <class V>
void visit(V& v, EvalConfig& c) {
  v("records", c.records);
  v("template", c.chat_template);
  v("tokenizer", c.tokenizer);
  v("tasks", c.tasks);
  v("max_new_tokens", c.max_new_tokens);
  v("batch_size", c.batch_size);
  v("max_turns_per_task", c.max_turns_per_task);
  v("next_action", c.next_action);
  v("heldout_loss", c.heldout_loss);
  v("multiple_choice", c.multiple_choice);
}

}  // namespace agenttune::eval
