// Config files set flags the way the command line does: a negated flag (`!--no-x`) given as
// `no-x = true` turns the option off, `no-x = false` leaves it on, a plain flag `x = true` turns it on.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <string>

#include "launcher/config.h"

namespace {

std::string write_toml(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

struct Flags {
  CLI::App app{"test"};
  bool unigram_keys = true;  // on by default, off with --no-unigram-keys
  bool verbose = false;
  Flags() {
    CLI::App* sub = app.add_subcommand("retrieve");
    sub->add_flag("!--no-unigram-keys", unigram_keys, "");
    sub->add_flag("--verbose", verbose, "");
  }
  void run(const std::string& toml) {
    app.parse(std::vector<std::string>{"retrieve"});
    dgr::launcher::apply_config_file(app, write_toml("flags.toml", toml));
  }
};

TEST(ConfigFile, NegatedFlagTrueTurnsTheOptionOff) {
  Flags f;
  f.run("[retrieve]\nno-unigram-keys = true\nverbose = true\n");
  EXPECT_FALSE(f.unigram_keys);
  EXPECT_TRUE(f.verbose);
}

TEST(ConfigFile, NegatedFlagFalseLeavesTheOptionOn) {
  Flags f;
  f.run("[retrieve]\nno-unigram-keys = false\nverbose = false\n");
  EXPECT_TRUE(f.unigram_keys);
  EXPECT_FALSE(f.verbose);
}

}  // namespace
