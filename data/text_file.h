// Reading the text files datasets and tokenizers are made of, with errors that name the file and the line.
#pragma once
#include <string>
#include <vector>

namespace dgpipe::data {

// Whole file as bytes. Throws "<who>: cannot open '<path>' (<reason>)" when it is missing or unreadable.
std::string read_file_bytes(const std::string& path, const std::string& who);

// Lines of a UTF-8 text file, without their '\n' (and a '\r' before it). A final empty line is dropped.
// Throws "<who>: <path>:<line>: invalid UTF-8 at byte <k> of the line" on the first ill-formed line.
std::vector<std::string> read_utf8_lines(const std::string& path, const std::string& who);

// Splits on a single-character separator, keeping empty fields.
std::vector<std::string> split_fields(const std::string& line, char separator);

}  // namespace dgpipe::data
