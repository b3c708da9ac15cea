#include "agenttune/eval/eval_run.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <map>

#include "agenttune/eval/batched_generation.h"
#include "agenttune/eval/heldout_loss.h"
#include "agenttune/eval/likelihood.h"
#include "agenttune/readers/dataset.h"
#include "agenttune/transforms/native_tool_calls.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"

namespace agenttune::eval {

namespace {

// A template that renders tools was tuned on ReAct data converted to native calls (prepare's
// datasets[].tool_calls: auto), so a dataset file's gold histories are converted the same way; a
// heldout.jsonl holds its records as prepare made them.
void as_trained(std::vector<Conversation>& convs, const std::string& chat_template, const std::filesystem::path& file) {
  const auto options = native_call_options(chat_template);
  if (!options) return;
  TransformReport native{"tool_calls"};
  to_native_tool_calls(convs, *options, native);
  if (native.get("native") > 0) log::info("eval: {}: {}", file.string(), native.summary());
}

std::vector<HeldOutRecord> read_record_file(const RecordFile& f, const std::string& chat_template) {
  if (f.format == "heldout") return read_heldout(f.path);
  DatasetSpec spec;
  spec.name = f.path.stem().string();
  spec.paths = {f.path};
  spec.format = parse_format(f.format);
  ReadReport report;
  auto convs = read_dataset(spec, report);
  as_trained(convs, chat_template, f.path);
  std::vector<HeldOutRecord> out;
  for (auto& conv : convs) {
    const AgentTask task = task_of(conv, spec.format);
    const bool negative = f.negative || is_negative(conv);
    out.push_back({std::move(conv), task, negative});
  }
  // What the reader left out is not scored: said, so a metric over fewer turns than the file holds
  // is not taken for one over all of them.
  if (!report.dropped_records.empty() || !report.dropped_turns.empty())
    log::warn("eval: {}: {}", f.path.string(), report.summary());
  return out;
}

bool wanted(const EvalConfig& cfg, AgentTask t) {
  return cfg.tasks.empty() || std::find(cfg.tasks.begin(), cfg.tasks.end(), t) != cfg.tasks.end();
}

// One assistant turn to decode: the gold history before it, rendered as the generation prompt.
struct Item {
  const HeldOutRecord* record;
  size_t turn;
  std::vector<int64_t> prompt;
};

Conversation history_before(const Conversation& conv, size_t turn) {
  Conversation h = conv;
  h.turns.resize(turn);
  return h;
}

// Every trained assistant turn of every record, in record order, the first max_turns_per_task of
// each task; turns whose prompt leaves no room for max_new_tokens in the model's context are
// counted and left out. The same list on every rank.
std::vector<Item> next_action_items(const EvalInputs& in, int64_t context, int64_t& skipped) {
  std::vector<Item> items;
  std::map<AgentTask, int64_t> per_task;
  for (const auto& r : in.records) {
    for (size_t i = 0; i < r.conv.turns.size(); ++i) {
      if (!trains(r.conv.turns[i])) continue;
      if (in.cfg.max_turns_per_task > 0 && per_task[r.task] >= in.cfg.max_turns_per_task) break;
      const auto ids = in.tmpl->generation_prompt_ids(history_before(r.conv, i), *in.tok);
      if (static_cast<int64_t>(ids.size()) + in.cfg.max_new_tokens > context) {
        ++skipped;
        continue;
      }
      ++per_task[r.task];
      items.push_back({&r, i, std::vector<int64_t>(ids.begin(), ids.end())});
    }
  }
  return items;
}

std::string reply_text(const Tokenizer& tok, std::vector<int64_t> ids, bool stopped) {
  if (stopped && !ids.empty()) ids.pop_back();  // the template's end of turn, not part of the reply
  return tok.decode(std::vector<int32_t>(ids.begin(), ids.end()));
}

TurnResult score_turn(const Item& it, std::string reply) {
  const auto& conv = it.record->conv;
  TurnResult t;
  t.task = it.record->task;
  t.negative = it.record->negative;
  t.record_id = conv.id;
  t.turn = it.turn;
  t.last_turn = it.turn > 0 ? conv.turns[it.turn - 1].content : std::string();
  t.reply = std::move(reply);
  t.gold = scored_text(conv.turns[it.turn]);
  t.score = score_action(t.task, history_before(conv, it.turn), t.reply, t.gold);
  t.hallucinated = t.negative && hallucinates(t.score, true);
  return t;
}

// The counters of TaskCounts after `task`, in a fixed order, for one sum over the ranks.
constexpr size_t kCounters = 8;
std::array<int64_t*, kCounters> counters(TaskCounts& c) {
  return {&c.positives, &c.negatives,    &c.format_valid, &c.action_match,
          &c.refused,   &c.tool_checked, &c.tool_valid,   &c.hallucinated};
}

void count(TaskCounts& c, const TurnResult& t) {
  if (t.negative) {
    ++c.negatives;
    c.hallucinated += t.hallucinated;
    return;
  }
  ++c.positives;
  c.format_valid += t.score.format_valid;
  c.action_match += t.score.action_match;
  c.refused += wrongly_refuses(t.score, false);
  if (t.score.tool_valid) {
    ++c.tool_checked;
    c.tool_valid += *t.score.tool_valid;
  }
}

std::vector<TaskCounts> summed_over_ranks(EvalModel& model, const std::vector<TurnResult>& turns) {
  constexpr auto& names = EnumNames<AgentTask>::values;
  std::vector<TaskCounts> all(names.size());
  for (size_t i = 0; i < names.size(); ++i) all[i].task = names[i].first;
  for (const auto& t : turns) count(all[static_cast<size_t>(t.task)], t);
  auto flat = at::zeros({static_cast<int64_t>(names.size() * kCounters)}, at::kLong);
  auto* p = flat.data_ptr<int64_t>();
  for (size_t i = 0; i < all.size(); ++i)
    for (size_t k = 0; k < kCounters; ++k) p[i * kCounters + k] = *counters(all[i])[k];
  auto on_device = flat.to(model.device());
  model.sum_over_ranks(on_device);
  flat = on_device.cpu();
  p = flat.data_ptr<int64_t>();
  std::vector<TaskCounts> out;
  for (size_t i = 0; i < all.size(); ++i) {
    for (size_t k = 0; k < kCounters; ++k) *counters(all[i])[k] = p[i * kCounters + k];
    if (all[i].positives + all[i].negatives > 0) out.push_back(all[i]);
  }
  return out;
}

void run_next_action(EvalModel& model, const EvalInputs& in, EvalResults& out) {
  const auto items = next_action_items(in, model.config().max_positions(), out.skipped_too_long);
  std::vector<const Item*> mine;
  for (size_t k = 0; k < items.size(); ++k)
    if (static_cast<int>(k % model.world_size()) == model.rank()) mine.push_back(&items[k]);
  std::vector<std::vector<int64_t>> prompts;
  for (const auto* it : mine) prompts.push_back(it->prompt);
  BatchGenerationOptions opts;
  opts.max_new_tokens = in.cfg.max_new_tokens;
  opts.stop_ids = in.stop_ids;
  opts.batch_size = in.cfg.batch_size;
  const auto gen = generate_batch(model, prompts, opts);
  for (size_t j = 0; j < mine.size(); ++j)
    out.turns.push_back(score_turn(*mine[j], reply_text(*in.tok, gen.tokens[j], gen.stopped[j])));
  out.tasks = summed_over_ranks(model, out.turns);
}

void add_losses(const char* group, const std::map<std::string, LossTally>& tallies, EvalResults& out) {
  for (const auto& [name, t] : tallies) out.losses.push_back({group, name, t.mean(), t.tokens});
}

void run_heldout_loss(EvalModel& model, const EvalInputs& in, EvalResults& out) {
  HeldOutLossOptions opts;
  opts.batch_size = in.cfg.batch_size;
  opts.max_seq_len = model.config().max_positions();  // as long as training may make a sequence
  const auto loss = heldout_loss(model, *in.tmpl, *in.tok, in.records, opts);
  if (loss.tokens_cut > 0 && model.rank() == 0)
    log::warn("eval: held-out loss leaves out {} trained tokens past the model's {} positions", loss.tokens_cut,
              opts.max_seq_len);
  add_losses("source", loss.by_source, out);
  add_losses("task", loss.by_task, out);
  add_losses("capability", loss.by_capability, out);
}

void run_multiple_choice(EvalModel& model, const EvalInputs& in, EvalResults& out) {
  for (const auto& f : in.cfg.multiple_choice) {
    MultipleChoiceOptions opts;
    opts.style = f.style;
    opts.shots = f.shots;
    opts.description = f.description;
    opts.batch_size = in.cfg.batch_size;
    const auto questions = read_choice_questions(f.path);
    const auto dev = f.dev_path.empty() ? std::vector<ChoiceQuestion>{} : read_choice_questions(f.dev_path);
    const auto r = score_multiple_choice(model, *in.tok, questions, dev, opts);
    out.choices.push_back({f.name.empty() ? f.path.stem().string() : f.name,
                           static_cast<int64_t>(r.questions.size()), r.acc, r.acc_norm});
  }
}

// Every id the template inserts by itself (BOS, EOS, its added tokens, its end of turn) must be a
// row of the model's embedding: a model tuned without the template lacks them, and the first
// forward's "index out of range" would not say why.
void check_template_fits(const std::string& name, const ChatTemplate& tmpl, const Tokenizer& tok, int64_t vocab_size) {
  std::vector<int32_t> ids = {tok.bos_id(), tok.eos_id()};
  for (const auto& piece : tmpl.added_tokens()) ids.push_back(tok.piece_to_id(piece).value_or(-1));
  for (int32_t id : tmpl.stop_ids(tok)) {
    // Without its end of turn no reply would stop before max_new_tokens.
    if (id < 0) fail("eval: template {}: the tokenizer has no token for its end of turn", name);
    ids.push_back(id);
  }
  for (int32_t id : ids)
    if (id >= vocab_size)  // -1: the tokenizer has none, which rendering reports if it needs one
      fail("eval: template {} needs token {} (id {}), outside the model's {} tokens: the model was not tuned with "
           "this template (set eval's `template` to the one it was)",
           name, tok.id_to_piece(id), id, vocab_size);
}

}  // namespace

EvalInputs load_eval_inputs(const EvalConfig& cfg, const std::filesystem::path& default_tokenizer,
                            int64_t vocab_size, const std::vector<int64_t>& eos_ids) {
  EvalInputs in;
  in.cfg = cfg;
  const auto tok_path = cfg.tokenizer.empty() ? default_tokenizer : cfg.tokenizer;
  if (tok_path.empty() || !std::filesystem::exists(tok_path))
    fail("eval: no tokenizer at '{}' (set eval's `tokenizer` to a tokenizer.json, a SentencePiece .model or a folder)",
         tok_path.string());
  in.tok = std::make_unique<Tokenizer>(Tokenizer::load(tok_path));
  for (const auto& f : cfg.records)
    for (auto& r : read_record_file(f, cfg.chat_template))
      if (wanted(cfg, r.task)) in.records.push_back(std::move(r));
  if (cfg.records.empty()) return in;
  in.tmpl = make_template(cfg.chat_template);
  prepare_tokenizer(*in.tmpl, *in.tok);
  check_template_fits(cfg.chat_template, *in.tmpl, *in.tok, vocab_size);
  for (int32_t id : in.tmpl->stop_ids(*in.tok)) in.stop_ids.push_back(id);
  // An id past the vocabulary is never decoded, so it needs no check.
  for (int64_t id : eos_ids)
    if (std::find(in.stop_ids.begin(), in.stop_ids.end(), id) == in.stop_ids.end()) in.stop_ids.push_back(id);
  if (in.records.empty())
    fail("eval: the records hold no conversation of the tasks asked for ({} files read)", cfg.records.size());
  return in;
}

EvalResults run_eval(EvalModel& model, const EvalInputs& in) {
  EvalResults out;
  if (in.tmpl && in.cfg.next_action) run_next_action(model, in, out);
  if (in.tmpl && in.cfg.heldout_loss) run_heldout_loss(model, in, out);
  run_multiple_choice(model, in, out);
  return out;
}

std::vector<std::pair<std::string, double>> eval_scalars(const EvalResults& r) {
  std::vector<std::pair<std::string, double>> out;
  auto share = [&](const std::string& prefix, const char* metric, int64_t part, int64_t whole) {
    if (whole > 0) out.emplace_back(prefix + "/" + metric, static_cast<double>(part) / whole);
  };
  for (const auto& c : r.tasks) {
    const std::string prefix = std::string("eval/") + task_name(c.task);
    share(prefix, "format_valid", c.format_valid, c.positives);
    share(prefix, "tool_valid", c.tool_valid, c.tool_checked);
    share(prefix, "action_match", c.action_match, c.positives);
    share(prefix, "refused", c.refused, c.positives);
    share(prefix, "hallucination", c.hallucinated, c.negatives);
  }
  // A task's loss sits with its other metrics (eval/os/loss); sources and capabilities get rows of their own.
  for (const auto& l : r.losses)
    out.emplace_back(l.group == "task" ? "eval/" + l.name + "/loss" : "eval/" + l.group + "_" + l.name + "/loss",
                     l.loss);
  for (const auto& c : r.choices) {
    out.emplace_back("eval/" + c.name + "/acc", c.acc);
    out.emplace_back("eval/" + c.name + "/acc_norm", c.acc_norm);
  }
  return out;
}

}  // namespace agenttune::eval
