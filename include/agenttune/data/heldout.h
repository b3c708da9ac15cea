#pragma once
// Held-out agent records: conversations the SFT prepare sets aside per dataset and per task
// (datasets[].holdout) and never trains on, written as `heldout.jsonl` next to the dataset's
// shards, for eval (next-action scoring, hallucination on negatives, held-out loss).
//
// One JSON object per line:
//   {"id": ..., "source": <dataset name>, "task": "os"|...|"chat", "negative": bool,
//    "file": <input file>, "record": <0-based index in it>,
//    "turns": [{"role": "system"|"user"|"assistant"|"tool", "content": ..., "loss": null|bool,
//               "capability": <Agent-FLAN tag, omitted when untagged>,
//               "tool_calls": [{"name", "arguments": <JSON object as text>, "id"?}] (omitted when none),
//               "name": <a tool turn's function, omitted when unset>}, ...],
//    "tools": [{"name", "json": <the tool's definition as text>}] (omitted when none)}
// Arguments and definitions are kept as the reader's text, so a template renders them as it did.
// The conversation is the normalised one the reader made (before the Agent-FLAN transforms), so
// actions keep their dataset's own syntax.
#include <filesystem>
#include <string>
#include <vector>

#include "agenttune/chat/agent_task.h"
#include "agenttune/chat/conversation.h"
#include "agenttune/readers/dataset.h"

namespace agenttune {

struct HeldOutRecord {
  Conversation conv;
  AgentTask task = AgentTask::Chat;
  bool negative = false;  // Agent-FLAN style: the right reply calls no tool
};

// The task of a record read as `format`: AgentInstruct by its id's prefix (an error naming the
// file, record and id when the prefix is none of the six), ToolBench, Agent-FLAN, and Chat for
// ShareGPT and OpenAI messages.
AgentTask task_of(const Conversation& conv, DatasetFormat format);

// Agent-FLAN's negatives (its toolbench_negative split): "negative" in the record id or in the
// input file's name.
bool is_negative(const Conversation& conv);

// The file written next to a prepared dataset's shards.
inline constexpr const char* kHeldOutFile = "heldout.jsonl";

// Writes atomically (a crash leaves the previous file or none).
void write_heldout(const std::filesystem::path& file, const std::vector<HeldOutRecord>& records);

// `path`: a heldout.jsonl file, or a prepared folder holding one. Errors name the file, the line
// and the field.
std::vector<HeldOutRecord> read_heldout(const std::filesystem::path& path);

}  // namespace agenttune
