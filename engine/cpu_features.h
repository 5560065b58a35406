// What the CPU running the process can execute, checked once at run time. The build targets plain x86-64
// (docs/architecture.md), so wider vector paths — the codecs' passes, the vectorised exp/GELU, dropout's
// Philox lanes — are compiled with target attributes and chosen here; off x86 every answer is false.
#pragma once

namespace dgpipe::engine {

inline bool cpu_has_avx2() {
#if defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

inline bool cpu_has_avx512() {
#if defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
#else
  return false;
#endif
}

// F16C's conversions take AVX registers.
inline bool cpu_has_f16c() {
#if defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
#else
  return false;
#endif
}

}  // namespace dgpipe::engine
