#pragma once
// General ability by likelihood: multiple-choice questions scored as lm-evaluation-harness scores
// them (its MMLU task, lm_eval/api/task.py and api/model.py at 0.4.13): one request per choice,
// (context, " " + choice), whose score is the summed log-probability of the continuation's tokens;
// acc = argmax of the scores is the answer, acc_norm = argmax of score / len(choice) in characters
// (for MMLU's letters that equals acc). tests/eval/py/lm_eval_oracle.py runs lm-eval itself on the
// same files as the test oracle.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "agenttune/eval/choice_style.h"
#include "agenttune/eval/eval_model.h"
#include "agenttune/tokenizer/tokenizer.h"

namespace agenttune::eval {

// One question of MMLU's layout. File: JSON Lines of {"question": str, "choices": [str, ...]
// (2 to 26), "answer": 0-based index or a letter "A".., "subject": str (optional)}.
struct ChoiceQuestion {
  std::string question;
  std::vector<std::string> choices;
  int64_t answer = 0;
  std::string subject;
};
// Errors name the file, the line and the field.
std::vector<ChoiceQuestion> read_choice_questions(const std::filesystem::path& file);

struct MultipleChoiceOptions {
  ChoiceStyle style = ChoiceStyle::Letters;
  // k-shot: the first k questions of the dev set given to score_multiple_choice, or, with none,
  // the first k of the scored file other than the question itself (lm-eval's first_n sampler).
  // Each shot is "<its context> <its answer's choice>\n\n".
  int64_t shots = 0;
  // Put before the shots; "{subject}" becomes the question's subject with '_' as ' ' (lm-eval's
  // MMLU: "The following are multiple choice questions (with answers) about {subject}.\n\n").
  std::string description;
  bool add_bos = true;  // what a Llama tokenizer does in transformers (lm-eval's default)
  int64_t batch_size = 8;  // sequences per forward
  // Longer requests lose context tokens from the left, as lm-eval does; 0 = the model's
  // max_position_embeddings.
  int64_t max_length = 0;
};

struct QuestionScore {
  std::vector<double> loglik;   // per choice: summed log p of its continuation tokens
  std::vector<uint8_t> greedy;  // per choice: every continuation token was the argmax
  int64_t predicted = 0;        // argmax of loglik (first on ties, as numpy)
  int64_t predicted_norm = 0;   // argmax of loglik / characters of the choice
  int64_t answer = 0;
};

struct MultipleChoiceResult {
  std::vector<QuestionScore> questions;
  double acc = 0, acc_norm = 0;  // shares in [0, 1]
};

// The prompt (description, shots, then the question's own context) and each choice's continuation.
std::string choice_context(const ChoiceQuestion& q, const std::vector<const ChoiceQuestion*>& shots,
                           const MultipleChoiceOptions& options);
std::vector<std::string> choice_continuations(const ChoiceQuestion& q, ChoiceStyle style);

// Collective on a sharded model (every rank passes the same questions; see target_scores.h).
MultipleChoiceResult score_multiple_choice(EvalModel& model, const Tokenizer& tok,
                                           const std::vector<ChoiceQuestion>& questions,
                                           const std::vector<ChoiceQuestion>& dev,
                                           const MultipleChoiceOptions& options);

}  // namespace agenttune::eval
