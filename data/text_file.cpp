#include "data/text_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "data/unicode.h"
#include "engine/error.h"

namespace dgpipe::data {

std::string read_file_bytes(const std::string& path, const std::string& who) {
  std::ifstream in(path, std::ios::binary);
  DGP_CHECK(in.good(), who << ": cannot open '" << path << "' (" << std::strerror(errno) << ")");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  DGP_CHECK(!in.bad(), who << ": error while reading '" << path << "'");
  return buffer.str();
}

std::vector<std::string> read_utf8_lines(const std::string& path, const std::string& who) {
  const std::string bytes = read_file_bytes(path, who);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < bytes.size()) {
    size_t end = bytes.find('\n', start);
    if (end == std::string::npos) end = bytes.size();
    size_t stop = end;
    if (stop > start && bytes[stop - 1] == '\r') --stop;
    lines.emplace_back(bytes, start, stop - start);
    const size_t bad = unicode::find_invalid_utf8(lines.back());
    DGP_CHECK(bad == std::string::npos, who << ": " << path << ":" << lines.size()
                                            << ": invalid UTF-8 at byte " << bad << " of the line");
    start = end + 1;
  }
  return lines;
}

std::vector<std::string> split_fields(const std::string& line, char separator) {
  std::vector<std::string> fields;
  size_t start = 0;
  while (true) {
    const size_t end = line.find(separator, start);
    if (end == std::string::npos) {
      fields.emplace_back(line, start);
      return fields;
    }
    fields.emplace_back(line, start, end - start);
    start = end + 1;
  }
}

}  // namespace dgpipe::data
