// util/files under failing filesystem calls (issue 14): a rename, a folder creation or a removal
// that the OS refuses is one agenttune::Error naming the paths and the reason, never a raw
// std::filesystem::filesystem_error; a failed atomic write leaves no temporary behind.
#include <gtest/gtest.h>

#include <cerrno>
#include <fstream>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/utf8.h"
#include "test_paths.h"

namespace agenttune {
namespace {

// The message of the agenttune::Error `f` throws, or a note saying what it threw instead.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not an agenttune::Error: ") + e.what();
  }
  return "(no error)";
}

TEST(Files, AtomicWriteOverAFolderNamesThePathAndLeavesNoTemporary) {
  auto dir = testing::scratch_dir();
  fs::create_directories(dir / "taken" / "inside");  // rename() cannot replace a non-empty folder
  const std::string msg = error_of([&] { write_file_atomic(dir / "taken", "data"); });
  EXPECT_NE(msg.find((dir / "taken").string() + ": cannot replace it with " + (dir / "taken").string() + ".tmp."),
            std::string::npos)
      << msg;
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(Files, RenameCreateAndRemoveFailuresNameThePaths) {
  auto dir = testing::scratch_dir();
  std::ofstream(dir / "file") << "x";
  std::string msg = error_of([&] { rename_file(dir / "missing", dir / "to"); });
  EXPECT_NE(msg.find((dir / "missing").string() + ": cannot rename to " + (dir / "to").string() + ": "),
            std::string::npos)
      << msg;
  msg = error_of([&] { create_dirs(dir / "file" / "sub"); });
  EXPECT_NE(msg.find((dir / "file" / "sub").string() + ": cannot create the folder: "), std::string::npos) << msg;
  fs::create_directories(dir / "full" / "x");
  msg = error_of([&] { remove_file(dir / "full"); });
  EXPECT_NE(msg.find((dir / "full").string() + ": cannot remove: "), std::string::npos) << msg;
  remove_file(dir / "absent");  // nothing to remove is fine
  msg = error_of([&] { read_text_file(dir); });
  EXPECT_NE(msg.find(dir.string() + ": is a folder, expected a file"), std::string::npos) << msg;
}

// errno is read at the failing call: set to ENOTTY ("Inappropriate ioctl for device", what an
// isatty() leaves) before each failure, it must not be what the message reports.
TEST(Files, AppendFileFailuresCarryTheErrnoOfTheFailingCall) {
  auto dir = testing::scratch_dir();
  errno = ENOTTY;
  std::string msg = error_of([&] { AppendFile f(dir / "missing" / "log"); });
  EXPECT_EQ(msg, (dir / "missing" / "log").string() + ": cannot open for appending: No such file or directory");
  AppendFile full("/dev/full");  // every write: ENOSPC, as on a full disk
  full.append("a row\n");
  errno = ENOTTY;
  msg = error_of([&] { full.flush(); });
  EXPECT_EQ(msg, "/dev/full: write failed: No space left on device");

  {
    AppendFile log(dir / "log");
    log.append("one\n");
    log.flush();
  }
  AppendFile again(dir / "log");  // a second opening appends, never truncates
  again.append("two\n");
  EXPECT_EQ(read_text_file(dir / "log"), "one\n") << "nothing is written before flush()";
  again.flush();
  EXPECT_EQ(read_text_file(dir / "log"), "one\ntwo\n");
}

TEST(Utf8, FirstInvalidByte) {
  EXPECT_EQ(first_invalid_utf8("plain ascii"), std::string_view::npos);
  EXPECT_EQ(first_invalid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), std::string_view::npos);
  EXPECT_EQ(first_invalid_utf8("ab\xff"), 2u);
  EXPECT_EQ(first_invalid_utf8("a\xc3\x28"), 1u);         // a lead byte without its continuation
  EXPECT_EQ(first_invalid_utf8("\xe2\x82"), 0u);          // cut short
  EXPECT_EQ(first_invalid_utf8("x\xed\xa0\x80"), 1u);     // a surrogate
  EXPECT_EQ(first_invalid_utf8("\xc0\xaf"), 0u);          // an overlong '/'
  EXPECT_EQ(first_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // past U+10FFFF
}

}  // namespace
}  // namespace agenttune
