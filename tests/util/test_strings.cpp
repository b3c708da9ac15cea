#include <gtest/gtest.h>

#include "agenttune/util/strings.h"

namespace agenttune {
namespace {

const std::vector<std::string> kKeys = {"hidden_size", "intermediate_size", "num_hidden_layers",
                                        "num_attention_heads", "num_key_value_heads", "rope_theta"};

TEST(Strings, LevenshteinCountsEdits) {
  EXPECT_EQ(levenshtein("", ""), 0u);
  EXPECT_EQ(levenshtein("kitten", "sitting"), 3u);
  EXPECT_EQ(levenshtein("hiden_size", "hidden_size"), 1u);
}

TEST(Strings, NearestSuggestsTyposAndShortenedNames) {
  EXPECT_EQ(nearest("hiden_size", kKeys), "hidden_size");
  EXPECT_EQ(nearest("rope_theat", kKeys), "rope_theta");
  EXPECT_EQ(nearest("num_layers", kKeys), "num_hidden_layers");
  EXPECT_EQ(nearest("completely_unrelated_thing", kKeys), "");
}

TEST(Strings, SplitKeepsEmptyParts) {
  EXPECT_EQ(split("a.b..c", '.'), (std::vector<std::string>{"a", "b", "", "c"}));
  EXPECT_EQ(split("", '.'), (std::vector<std::string>{""}));
}

TEST(Strings, JoinFirstShowsAFewThenAnEllipsis) {
  EXPECT_EQ(join_first({}), "");
  EXPECT_EQ(join_first({"a", "b", "c"}), "a, b, c");
  EXPECT_EQ(join_first({"a", "b", "c", "d", "e"}), "a, b, c, ...");
  EXPECT_EQ(join_first({"a", "b"}, 1, " "), "a ...");
}

}  // namespace
}  // namespace agenttune
