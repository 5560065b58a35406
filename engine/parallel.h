// CPU op parallelism: a pool of worker threads per calling thread, and parallel_for over an index range.
//
// Every op that uses it splits its work into disjoint items (elements, channels, images) and computes each
// item exactly as the serial loop would, so results are bitwise the same at any thread count.
//
// Budget: cpu_threads() is the number of threads (the caller included) one op may use. The process-wide value
// is DGPIPE_THREADS or, unset, the cores this process may run on; set_cpu_threads() changes it. A thread that
// shares the cores with others (a pipeline stage thread) sets its own share with set_thread_cpu_threads(), so
// stage threads x op threads stays within the cores.
#pragma once
#include <cstdint>
#include <functional>

namespace dgpipe::engine {

int cpu_threads();                   // for ops called on this thread
void set_cpu_threads(int n);         // process-wide (n >= 1)
void set_thread_cpu_threads(int n);  // this thread only (n >= 1); 0 returns to the process-wide value
int available_cores();               // cores this process may run on

// oneDNN's convolutions run on OpenMP (engine/ops/conv_onednn.cpp), whose workers by default spin for a few
// milliseconds after every region (libgomp's wait policy), taking the cores from the engine's own op threads,
// other pipeline stages and other processes. libgomp reads OMP_WAIT_POLICY once, when it is loaded, before
// main. An executable calls this first thing in main: in a build with oneDNN, with OMP_WAIT_POLICY unset, it
// sets it to passive and re-executes the program (argv unchanged, same process id); otherwise, or if that
// fails, it returns. The user's own OMP_WAIT_POLICY is kept.
void restart_with_passive_openmp_wait(char** argv);

// Calls f(begin, end) on disjoint chunks that together cover [0, n), each at least `grain` items long (but
// the last), on up to cpu_threads() threads; serially, as f(0, n), when that is one thread, when n < 2*grain,
// or when called from inside another parallel_for. Rethrows the first exception a chunk threw, after all
// chunks have finished.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

}  // namespace dgpipe::engine
