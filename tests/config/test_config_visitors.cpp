// The generic mechanism on a struct that uses every supported shape: enums as strings, optionals,
// lists of scalars and of sections, paths, narrow integers, floats.
#include <gtest/gtest.h>

#include "agenttune/config/load.h"
#include "config_test_util.h"

namespace agenttune {

enum class Schedule { cosine, linear, constant };
template <>
struct EnumNames<Schedule> {
  static constexpr std::array values = {std::pair{Schedule::cosine, std::string_view("cosine")},
                                        std::pair{Schedule::linear, std::string_view("linear")},
                                        std::pair{Schedule::constant, std::string_view("constant")}};
};

namespace {

using testing::error_of;
using testing::write_yaml;
namespace fs = std::filesystem;

struct Source {
  std::string name;
  double weight = 1.0;
  std::optional<int64_t> max_samples;
};
template <class V>
void visit(V& v, Source& s) {
  v("name", s.name);
  v("weight", s.weight);
  v("max_samples", s.max_samples);
}

struct Demo {
  Schedule schedule = Schedule::cosine;
  std::vector<int64_t> milestones;
  std::vector<std::string> tags;
  std::vector<Source> sources;
  std::optional<std::string> note;
  std::optional<Source> eval;
  int32_t small = 3;
  float lr = 1e-4f;
  fs::path out;
};
template <class V>
void visit(V& v, Demo& d) {
  v("schedule", d.schedule);
  v("milestones", d.milestones);
  v("tags", d.tags);
  v("sources", d.sources);
  v("note", d.note);
  v("eval", d.eval);
  v("small", d.small);
  v("lr", d.lr);
  v("out", d.out);
}

const char* kDemo =
    "schedule: linear\n"
    "milestones: [10, 20, 30]\n"
    "tags: [a, \"true\", \"null\", '']\n"
    "sources:\n"
    "  - name: agent_instruct\n"
    "    weight: 0.2\n"
    "  - name: sharegpt\n"
    "    max_samples: 1000\n"
    "eval: {name: held_out}\n"
    "small: -7\n"
    "lr: 2.0e-5\n"
    "out: runs/demo\n";

TEST(ConfigVisitors, ReadsEveryShape) {
  auto path = write_yaml("demo.yaml", kDemo);
  auto d = load_config<Demo>(path);
  EXPECT_EQ(d.schedule, Schedule::linear);
  EXPECT_EQ(d.milestones, (std::vector<int64_t>{10, 20, 30}));
  EXPECT_EQ(d.tags, (std::vector<std::string>{"a", "true", "null", ""}));
  ASSERT_EQ(d.sources.size(), 2u);
  EXPECT_EQ(d.sources[0].name, "agent_instruct");
  EXPECT_DOUBLE_EQ(d.sources[0].weight, 0.2);
  EXPECT_EQ(d.sources[0].max_samples, std::nullopt);
  EXPECT_DOUBLE_EQ(d.sources[1].weight, 1.0);
  EXPECT_EQ(d.sources[1].max_samples, 1000);
  EXPECT_EQ(d.note, std::nullopt);
  ASSERT_TRUE(d.eval.has_value());
  EXPECT_EQ(d.eval->name, "held_out");
  EXPECT_EQ(d.small, -7);
  EXPECT_FLOAT_EQ(d.lr, 2.0e-5f);
  EXPECT_EQ(d.out, fs::absolute(path.parent_path() / "runs" / "demo").lexically_normal());
}

TEST(ConfigVisitors, ErrorsInsideListsAndEnums) {
  auto path = write_yaml("demo.yaml", std::string(kDemo) + "  # trailing comment\n");
  auto msg = error_of([&] { load_config<Demo>(path, {"schedule=cosin"}); });
  EXPECT_NE(msg.find("schedule: expected one of cosine, linear, constant, got 'cosin'"),
            std::string::npos) << msg;
  msg = error_of([&] { load_config<Demo>(path, {"sources.1.weight=heavy"}); });
  EXPECT_NE(msg.find("--set sources.1.weight=heavy: sources[1].weight: expected a number, "
                     "got 'heavy'"), std::string::npos) << msg;
  msg = error_of([&] { load_config<Demo>(path, {"sources.2.weight=1"}); });
  EXPECT_NE(msg.find("'sources' is a list of 2 items; '2' is not an index into it"),
            std::string::npos) << msg;
  msg = error_of([&] { load_config<Demo>(path, {"small=3000000000"}); });  // beyond int32
  EXPECT_NE(msg.find("small: expected an integer, got '3000000000'"), std::string::npos) << msg;

  auto bad = write_yaml("bad.yaml", "sources:\n  - name: a\n  - name: b\n    wieght: 2\n");
  msg = error_of([&] { load_config<Demo>(bad); });
  EXPECT_NE(msg.find(bad.string() + ":4: unknown key 'sources[1].wieght' (did you mean 'weight'?)"),
            std::string::npos) << msg;
  auto notlist = write_yaml("notlist.yaml", "milestones: 10\n");
  msg = error_of([&] { load_config<Demo>(notlist); });
  EXPECT_NE(msg.find(":1: milestones: expected a list, got '10'"), std::string::npos) << msg;
}

TEST(ConfigVisitors, OverridesAddressListItemsAndResolvePathsAgainstCwd) {
  auto path = write_yaml("demo.yaml", kDemo);
  auto d = load_config<Demo>(path, {"sources.0.weight=0.5", "note=hello", "eval=null",
                                    "tags=[x]", "out=rel/dir"});
  EXPECT_DOUBLE_EQ(d.sources[0].weight, 0.5);
  EXPECT_EQ(d.sources[1].name, "sharegpt");
  EXPECT_EQ(d.note, "hello");
  EXPECT_EQ(d.eval, std::nullopt);
  EXPECT_EQ(d.tags, (std::vector<std::string>{"x"}));
  EXPECT_EQ(d.out, (fs::current_path() / "rel" / "dir").lexically_normal());
}

TEST(ConfigVisitors, DumpRoundTripsStringsThatLookLikeOtherTypes) {
  auto d = load_config<Demo>(write_yaml("demo.yaml", kDemo), {"note=~", "small=0"});
  d.note = "123";
  auto text = dump_config(d);
  auto back = load_config_text<Demo>(text, {"dump", ".", {}});
  EXPECT_EQ(back.note, "123");
  EXPECT_EQ(back.tags, d.tags);  // "true", "null" and "" stay strings
  EXPECT_EQ(back.schedule, Schedule::linear);
  EXPECT_EQ(back.milestones, d.milestones);
  ASSERT_EQ(back.sources.size(), 2u);
  EXPECT_EQ(back.sources[0].weight, d.sources[0].weight);
  EXPECT_EQ(back.sources[1].max_samples, 1000);
  EXPECT_EQ(back.eval->name, "held_out");
  EXPECT_EQ(back.lr, d.lr);
  EXPECT_EQ(back.out, d.out);
  EXPECT_EQ(dump_config(back), text);
  EXPECT_NE(text.find("milestones: [10, 20, 30]"), std::string::npos) << text;
}

}  // namespace
}  // namespace agenttune
