// TOML config file -> CLI11 options (see Note [Config keys] in config.h).
#include "launcher/config.h"

#include <cstdlib>

#include <toml++/toml.h>

#include <sstream>
#include <vector>

#include "common/error.h"

namespace dgr::launcher {
namespace {

std::string node_line(const toml::node& node) {
  const auto& src = node.source();
  return src.begin.line > 0 ? std::to_string(src.begin.line) : "?";
}

// Scalars as the strings CLI11 would have seen on the command line.
bool scalar_to_string(const toml::node& node, std::string* out) {
  if (auto v = node.as_string()) { *out = v->get(); return true; }
  if (auto v = node.as_boolean()) { *out = v->get() ? "true" : "false"; return true; }
  if (auto v = node.as_integer()) { *out = std::to_string(v->get()); return true; }
  if (auto v = node.as_floating_point()) {
    std::ostringstream s;
    s.precision(17);
    s << v->get();
    *out = s.str();
    return true;
  }
  return false;
}

std::string valid_keys(const CLI::App& app) {
  std::string keys;
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->get_lnames().empty()) continue;
    const std::string& name = opt->get_lnames().front();
    if (name == "help" || name == "config" || name == "version") continue;
    keys += (keys.empty() ? "" : ", ") + name;
  }
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    keys += (keys.empty() ? "[" : ", [") + sub->get_name() + "]";
  }
  return keys.empty() ? "none" : keys;
}

void apply_table(CLI::App& app, const toml::table& table, const std::string& prefix, const std::string& path,
                 std::vector<std::string>& errors) {
  for (const auto& [key_view, node] : table) {
    std::string key(key_view.str());
    std::string full = prefix.empty() ? key : prefix + "." + key;
    if (const toml::table* sub = node.as_table()) {
      CLI::App* subapp = nullptr;
      try {
        subapp = app.get_subcommand(key);
      } catch (const CLI::OptionNotFound&) {
      }
      if (subapp == nullptr) {
        errors.push_back(fmt::format("{}:{}: unknown table [{}] (valid here: {})", path, node_line(node), full,
                                     valid_keys(app)));
        continue;
      }
      apply_table(*subapp, *sub, full, path, errors);
      continue;
    }
    CLI::Option* opt = app.get_option_no_throw("--" + key);
    if (opt == nullptr || key == "help" || key == "config" || key == "version") {
      errors.push_back(fmt::format("{}:{}: unknown key '{}' (valid here: {})", path, node_line(node), full,
                                   valid_keys(app)));
      continue;
    }
    std::vector<std::string> values;
    std::string value;
    if (const toml::array* array = node.as_array()) {
      for (const auto& element : *array) {
        if (!scalar_to_string(element, &value)) {
          errors.push_back(fmt::format("{}:{}: key '{}' holds a nested array or table", path, node_line(node), full));
          values.clear();
          break;
        }
        values.push_back(value);
      }
    } else if (scalar_to_string(node, &value)) {
      values.push_back(value);
    } else {
      errors.push_back(fmt::format("{}:{}: key '{}' has an unsupported value type", path, node_line(node), full));
      continue;
    }
    if (opt->count() > 0 || values.empty()) continue;  // the command line wins
    try {
      // A flag's value goes through get_flag_value as CLI11's own config reader does, so that
      // `no-unigram-keys = true` for the flag `!--no-unigram-keys` stores false, not true.
      for (const auto& v : values) opt->add_result(opt->get_expected_min() == 0 ? opt->get_flag_value(key, v) : v);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      opt->clear();
      errors.push_back(fmt::format("{}:{}: key '{}': {}", path, node_line(node), full, e.what()));
    }
  }
}

}  // namespace

void add_global_options(CLI::App& app, GlobalOptions& options) {
  app.option_defaults()->always_capture_default();
  app.fallthrough();  // global options may follow the subcommand
  app.add_option("--config", options.config_file,
                 "TOML file with values for any flag: top-level keys for these options, a table per "
                 "subcommand ([data.build-debian]); flags win over the file");
  app.add_option("--log-dir", options.log.dir, "Directory for one debug log file per rank (dgr.rNN.log); '' = none");
  app.add_option("--log-level", options.log.console_level, "Console log level of rank 0 (trace, debug, info, warn, error)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_flag("--version", options.version, "Print the versions of dgr and its libraries and exit");
}

void show_flag_defaults(CLI::App& app) {
  for (CLI::Option* opt : app.get_options()) {
    if (opt->get_expected_max() == 0 && opt->get_name() != "--help" && opt->get_name() != "--help-all" &&
        opt->get_name() != "--version") {
      opt->description(opt->get_description() + " (default: off)");
    }
  }
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) show_flag_defaults(*sub);
}

namespace {

// A TOML value for one of CLI11's strings: numbers and booleans bare, anything else a quoted string.
std::string toml_value(const std::string& v) {
  if (v == "true" || v == "false") return v;
  char* end = nullptr;
  std::strtod(v.c_str(), &end);
  if (!v.empty() && end == v.c_str() + v.size() && v.find_first_not_of("0123456789+-.eE") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string resolved_config_toml(const CLI::App& leaf) {
  std::string table;
  for (const CLI::App* a = &leaf; a != nullptr && a->get_parent() != nullptr; a = a->get_parent())
    table = table.empty() ? a->get_name() : a->get_name() + "." + table;
  std::string out = "# The options of `dgr " + table + "` as this run took them: what the command line and the config file\n"
                    "# gave, as keys; the defaults it ran with, as comments (OUT/config.json has every effective\n"
                    "# value). Run it again with: dgr --config THIS_FILE " + table + "\n[" + table + "]\n";
  std::string defaults;
  for (const CLI::Option* opt : leaf.get_options()) {
    const std::string name = opt->get_single_name();
    if (name.empty() || name == "help" || name == "help-all" || opt->get_lnames().empty()) continue;
    if (opt->count() == 0) {
      if (opt->get_expected_max() != 0 && !opt->get_default_str().empty())
        defaults += "# " + name + " = " + opt->get_default_str() + "\n";
      continue;
    }
    if (opt->get_expected_max() == 0) {  // a flag
      out += name + " = true\n";
      continue;
    }
    const std::vector<std::string>& values = opt->results();
    const bool vector = opt->get_expected_max() > 1 || opt->get_items_expected_max() > 1 || values.size() > 1;
    out += name + " = ";
    if (vector) {
      out += "[";
      for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + toml_value(values[i]);
      out += "]";
    } else {
      out += toml_value(values.empty() ? std::string() : values[0]);
    }
    out += "\n";
  }
  return out + "# defaults:\n" + defaults;
}

void apply_config_file(CLI::App& app, const std::string& path) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    std::string desc(e.description());
    if (src.begin.line == 0) throw ConfigError(fmt::format("{}: cannot read the config file: {}", path, desc));
    throw ConfigError(fmt::format("{}:{}:{}: TOML syntax error: {}", path, src.begin.line, src.begin.column, desc));
  }
  std::vector<std::string> errors;
  apply_table(app, table, "", path, errors);
  if (errors.empty()) return;
  if (errors.size() == 1) throw ConfigError(errors.front());
  std::string message = fmt::format("{} problem{} in the config file (fix or remove these keys):",
                                    errors.size(), errors.size() > 1 ? "s" : "");
  for (const auto& e : errors) message += "\n  " + e;
  throw ConfigError(message);
}

}  // namespace dgr::launcher
