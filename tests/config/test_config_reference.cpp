// The config reference (docs/config.md's generator): every key a visit() table offers, with the
// reader's type words and the writer's default, and an error for a key without a meaning or a
// meaning without a key. The real file's freshness is the ctest docs.config_md_current.
#include <gtest/gtest.h>

#include "agenttune/config/reference.h"
#include "agenttune/train/train_config.h"
#include "error_of.h"

namespace agenttune {

enum class RefSpeed { Fast, Slow };
template <>
struct EnumNames<RefSpeed> {
  static constexpr std::array values = {std::pair{RefSpeed::Fast, std::string_view("fast")},
                                        std::pair{RefSpeed::Slow, std::string_view("slow")}};
};

namespace {

struct RefInner {
  int64_t depth = 3;
  std::string label = "a|b";
};
template <class V>
void visit(V& v, RefInner& c) {
  v("depth", c.depth);
  v("label", c.label);
}

struct RefToy {
  std::filesystem::path out;
  RefSpeed speed = RefSpeed::Fast;
  std::optional<double> ratio;
  std::vector<std::string> tags = {"x", "y"};
  RefInner inner;
  std::optional<RefInner> extra;
  std::vector<RefInner> items;
  bool on = true;
};
template <class V>
void visit(V& v, RefToy& c) {
  v("out", c.out);
  v("speed", c.speed);
  v("ratio", c.ratio);
  v("tags", c.tags);
  v.section("inner", c.inner);
  v("extra", c.extra);
  v("items", c.items);
  v("on", c.on);
}

std::string row(const ConfigKey& k) { return k.path + " | " + k.type + " | " + k.default_yaml; }

TEST(ConfigReference, ListsEveryKeyDepthFirstWithTypeAndDefault) {
  std::vector<std::string> rows;
  for (const auto& k : list_config_keys<RefToy>()) rows.push_back(row(k));
  const std::vector<std::string> want = {
      R"(out | path | "")",
      "speed | one of fast, slow | fast",
      "ratio | number or null | null",
      R"(tags | list of string (UTF-8) | ["x", "y"])",
      "inner | mapping | ",
      "inner.depth | integer | 3",
      R"(inner.label | string (UTF-8) | "a|b")",
      "extra | mapping or null | null",  // its keys, with the defaults it has when given
      "extra.depth | integer | 3",
      R"(extra.label | string (UTF-8) | "a|b")",
      "items | list of mappings | []",
      "items[].depth | integer | 3",
      R"(items[].label | string (UTF-8) | "a|b")",
      "on | boolean (true or false) | true",
  };
  EXPECT_EQ(rows, want);
}

TEST(ConfigReference, KeysAreOwnedByTheStructThatOffersThem) {
  auto keys = list_config_keys<RefToy>();
  EXPECT_EQ(keys[0].owner, std::type_index(typeid(RefToy)));
  EXPECT_EQ(keys[5].path, "inner.depth");
  EXPECT_EQ(keys[5].owner, std::type_index(typeid(RefInner)));
  EXPECT_EQ(keys[5].key, "depth");
  EXPECT_EQ(keys[11].path, "items[].depth");
  EXPECT_EQ(keys[11].owner, std::type_index(typeid(RefInner)));
}

ConfigMeanings toy_meanings(const std::string& label_meaning = "A label.") {
  ConfigMeanings m("toy_table.cpp");
  m.add<RefToy>({{"out", "Where."}, {"speed", "How fast."}, {"ratio", "A ratio."}, {"tags", "Tags."},
                 {"inner", "Inner."}, {"extra", "Extra."}, {"items", "Items."}, {"on", "On."}});
  m.add<RefInner>({{"depth", "How deep."}, {"label", label_meaning}});
  return m;
}

TEST(ConfigReference, MarkdownHasOneRowPerKeyAndEscapesTheColumnSeparator) {
  std::vector<ConfigReferenceSection> sections = {{"Toy", "A toy.", list_config_keys<RefToy>()}};
  const std::string md = config_reference_markdown("# Ref\n", sections, toy_meanings());
  EXPECT_EQ(md.substr(0, md.find("| `out`")),
            "# Ref\n\n## Toy\n\nA toy.\n\n| Key | Type | Default | Meaning |\n|---|---|---|---|\n");
  EXPECT_NE(md.find("| `speed` | one of fast, slow | `fast` | How fast. |\n"), std::string::npos) << md;
  EXPECT_NE(md.find("| `inner` | mapping |  | Inner. |\n"), std::string::npos) << md;
  // The struct's meanings serve it wherever it appears.
  EXPECT_NE(md.find("| `items[].label` | string (UTF-8) | `\"a\\|b\"` | A label. |\n"), std::string::npos) << md;
  EXPECT_NE(md.find("| `extra.depth` | integer | `3` | How deep. |\n"), std::string::npos) << md;
  size_t rows = 0;
  for (size_t p = 0; (p = md.find("\n| `", p)) != std::string::npos; ++p) ++rows;
  EXPECT_EQ(rows, 14u);
}

TEST(ConfigReference, AKeyWithoutAMeaningOrAMeaningWithoutAKeyFails) {
  std::vector<ConfigReferenceSection> sections = {{"Toy", "A toy.", list_config_keys<RefToy>()}};
  ConfigMeanings m = toy_meanings("");  // an empty meaning is none
  m.add<RefToy>({{"gone", "Old."}});
  const std::string e = testing::error_of([&] { config_reference_markdown("", sections, m); });
  EXPECT_NE(e.find("3 key(s) without a meaning: inner.label ((anonymous namespace)::RefInner.label), "
                   "extra.label ("),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("items[].label ("), std::string::npos) << e;
  EXPECT_NE(e.find("1 meaning(s) of no key: (anonymous namespace)::RefToy.gone"), std::string::npos) << e;
  EXPECT_NE(e.find("edit toy_table.cpp"), std::string::npos) << e;
  EXPECT_EQ(testing::error_of([&] { config_reference_markdown("", sections, toy_meanings()); }), "");
}

// The real train config, through the same lister: the sections, a list item's keys, and the
// optional shape with the keys it takes when given.
TEST(ConfigReference, TrainConfigListsNestedAndListKeys) {
  std::map<std::string, std::string> rows;
  for (const auto& k : list_config_keys<TrainConfig>()) rows[k.path] = k.type + " | " + k.default_yaml;
  EXPECT_EQ(rows.at("output_dir"), R"(path | "")");
  EXPECT_EQ(rows.at("data.sources"), "list of mappings | []");
  EXPECT_EQ(rows.at("data.sources[].weight"), "number | 1.0");
  EXPECT_EQ(rows.at("train.lr"), "number | 0.0003");
  EXPECT_EQ(rows.at("model.shape"), "mapping or null | null");
  EXPECT_EQ(rows.at("model.shape.hidden_size"), "integer | 4096");
  EXPECT_EQ(rows.at("model.shape.pad_token_id"), "integer or null | null");
  EXPECT_EQ(rows.at("model.compute_dtype"), "dtype (float32, bfloat16 or float16) | float32");
}

}  // namespace
}  // namespace agenttune
