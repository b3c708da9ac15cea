#include "agenttune/eval/likelihood.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "agenttune/data/json_lines.h"
#include "agenttune/eval/target_scores.h"
#include "agenttune/util/error.h"

namespace agenttune::eval {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kMaxChoices = 26;

int64_t answer_index(const json& a, size_t n_choices) {
  int64_t i = -1;
  if (a.is_number_integer()) i = a.get<int64_t>();
  else if (a.is_string() && a.get<std::string>().size() == 1) i = a.get<std::string>()[0] - 'A';
  else fail("field 'answer' must be a 0-based index or a letter A..Z, got {}", a.dump());
  if (i < 0 || i >= static_cast<int64_t>(n_choices))
    fail("field 'answer' {} is not one of the {} choices", a.dump(), n_choices);
  return i;
}

ChoiceQuestion question_from(const json& j) {
  if (!j.is_object()) fail("a record must be a JSON object");
  ChoiceQuestion q;
  auto q_it = j.find("question");
  if (q_it == j.end() || !q_it->is_string()) fail("field 'question' must be a string");
  q.question = q_it->get<std::string>();
  auto c_it = j.find("choices");
  if (c_it == j.end() || !c_it->is_array() || c_it->size() < 2 || c_it->size() > kMaxChoices)
    fail("field 'choices' must be an array of 2 to {} strings", kMaxChoices);
  for (const auto& c : *c_it) {
    if (!c.is_string()) fail("field 'choices' holds {}, not a string", c.dump());
    q.choices.push_back(c.get<std::string>());
  }
  auto a_it = j.find("answer");
  if (a_it == j.end()) fail("field 'answer' is missing");
  q.answer = answer_index(*a_it, q.choices.size());
  if (auto s = j.find("subject"); s != j.end()) {
    if (!s->is_string()) fail("field 'subject' must be a string");
    q.subject = s->get<std::string>();
  }
  return q;
}

// Python's str.strip() for the ASCII whitespace lm-eval's prompts hold.
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string strip(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

std::string question_text(const ChoiceQuestion& q, ChoiceStyle style) {
  if (style == ChoiceStyle::Texts) return "Question: " + q.question + "\nAnswer:";
  std::string s = strip(q.question);
  for (size_t i = 0; i < q.choices.size(); ++i) s += fmt::format("\n{}. {}", static_cast<char>('A' + i), q.choices[i]);
  return s + "\nAnswer:";
}

std::string described(const std::string& description, const std::string& subject) {
  std::string spaced = subject;
  std::replace(spaced.begin(), spaced.end(), '_', ' ');
  std::string out = description;
  for (size_t at; (at = out.find("{subject}")) != std::string::npos;) out.replace(at, 9, spaced);
  return out;
}

bool same(const ChoiceQuestion& a, const ChoiceQuestion& b) {
  return a.question == b.question && a.choices == b.choices && a.answer == b.answer && a.subject == b.subject;
}

// lm-eval's _encode_pair: the context's trailing whitespace moves to the continuation, and the
// continuation's tokens are those of encode(context + continuation) after encode(context)'s count.
ScoredSequence encode_pair(const Tokenizer& tok, std::string ctx, std::string cont, bool add_bos, int64_t max_len) {
  size_t keep = ctx.size();
  while (keep > 0 && is_space(ctx[keep - 1])) --keep;
  cont = ctx.substr(keep) + cont;
  ctx.resize(keep);
  const auto whole = tok.encode(ctx + cont, add_bos);
  const auto n_ctx = std::min(tok.encode(ctx, add_bos).size(), whole.size());
  const size_t n_cont = whole.size() - n_ctx;
  if (n_cont == 0) fail("the continuation '{}' encodes to no token after its context", cont);
  if (static_cast<int64_t>(n_cont) > max_len)
    fail("the continuation '{}' is {} tokens, longer than the model's {} positions", cont, n_cont, max_len);
  // (context + continuation)[-(max_len + 1):] as lm-eval feeds it; the first token is never scored.
  const size_t begin = whole.size() > static_cast<size_t>(max_len) + 1 ? whole.size() - max_len - 1 : 0;
  ScoredSequence s;
  s.ids.assign(whole.begin() + static_cast<int64_t>(begin), whole.end());
  s.scored.assign(s.ids.size(), 0);
  std::fill(s.scored.end() - static_cast<int64_t>(n_cont), s.scored.end(), 1);
  return s;
}

// Python's len(): code points (UTF-8 bytes that do not continue a sequence).
double characters(const std::string& s) {
  return static_cast<double>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// numpy's argmax: the first of equal maxima.
int64_t argmax(const std::vector<double>& v) {
  return static_cast<int64_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

std::vector<ChoiceQuestion> read_choice_questions(const fs::path& file) {
  std::vector<ChoiceQuestion> out;
  for_each_json_line(file, [&](const json& j) { out.push_back(question_from(j)); });
  if (out.empty()) fail("{}: no multiple-choice questions in it", file.string());
  return out;
}

std::vector<std::string> choice_continuations(const ChoiceQuestion& q, ChoiceStyle style) {
  std::vector<std::string> out;
  for (size_t i = 0; i < q.choices.size(); ++i)
    out.push_back(style == ChoiceStyle::Letters ? std::string(1, static_cast<char>('A' + i)) : q.choices[i]);
  return out;
}

std::string choice_context(const ChoiceQuestion& q, const std::vector<const ChoiceQuestion*>& shots,
                           const MultipleChoiceOptions& o) {
  std::string s = described(o.description, q.subject);
  for (const auto* shot : shots)
    s += question_text(*shot, o.style) + " " + choice_continuations(*shot, o.style)[shot->answer] + "\n\n";
  return s + question_text(q, o.style);
}

namespace {

// The first `shots` of `pool`, leaving out `q` itself when the shots come from its own file.
std::vector<const ChoiceQuestion*> shots_for(const ChoiceQuestion& q, const std::vector<ChoiceQuestion>& pool,
                                             bool same_file, int64_t shots) {
  std::vector<const ChoiceQuestion*> out;
  for (const auto& p : pool) {
    if (static_cast<int64_t>(out.size()) == shots) break;
    if (!same_file || !same(p, q)) out.push_back(&p);
  }
  return out;
}

// One question's scores from its choices' token scores (scores[first + c] for choice c).
QuestionScore question_score(const ChoiceQuestion& q, ChoiceStyle style, const TargetScores& scores, size_t first) {
  QuestionScore qs;
  qs.answer = q.answer;
  std::vector<double> norm;
  const auto conts = choice_continuations(q, style);
  for (size_t c = 0; c < conts.size(); ++c) {
    double ll = 0;
    for (double v : scores.logprobs[first + c]) ll += v;
    const auto& g = scores.greedy[first + c];
    qs.loglik.push_back(ll);
    qs.greedy.push_back(std::all_of(g.begin(), g.end(), [](uint8_t v) { return v != 0; }) ? 1 : 0);
    norm.push_back(ll / characters(conts[c]));
  }
  qs.predicted = argmax(qs.loglik);
  qs.predicted_norm = argmax(norm);
  return qs;
}

}  // namespace

MultipleChoiceResult score_multiple_choice(EvalModel& model, const Tokenizer& tok,
                                           const std::vector<ChoiceQuestion>& questions,
                                           const std::vector<ChoiceQuestion>& dev, const MultipleChoiceOptions& o) {
  if (questions.empty()) fail("multiple choice: no questions to score");
  if (o.shots < 0) fail("multiple choice: shots must be >= 0, got {}", o.shots);
  const bool same_file = dev.empty();
  const auto& pool = same_file ? questions : dev;
  const size_t need = static_cast<size_t>(o.shots) + (same_file ? 1 : 0);
  if (o.shots > 0 && pool.size() < need)
    fail("multiple choice: {} shots need {} questions in the {}, which has {}", o.shots, need,
         same_file ? "scored file (the question itself is left out)" : "dev set", pool.size());
  const int64_t max_len = o.max_length > 0 ? o.max_length : model.config().max_position_embeddings;
  std::vector<ScoredSequence> seqs;
  for (const auto& q : questions) {
    const auto ctx = choice_context(q, shots_for(q, pool, same_file, o.shots), o);
    for (const auto& cont : choice_continuations(q, o.style))
      seqs.push_back(encode_pair(tok, ctx, " " + cont, o.add_bos, max_len));
  }
  const auto scores = score_targets(model, seqs, o.batch_size);
  MultipleChoiceResult r;
  size_t first = 0;
  for (const auto& q : questions) {
    r.questions.push_back(question_score(q, o.style, scores, first));
    first += q.choices.size();
    r.acc += r.questions.back().predicted == q.answer ? 1 : 0;
    r.acc_norm += r.questions.back().predicted_norm == q.answer ? 1 : 0;
  }
  r.acc /= static_cast<double>(questions.size());
  r.acc_norm /= static_cast<double>(questions.size());
  return r;
}

}  // namespace agenttune::eval
