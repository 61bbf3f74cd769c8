// sparse-cpu engine: executes a plan built by sparsekit/engine/planner.py in one native call.
// Generic (non-hot) ops are compiled for the baseline ISA; conv/fc kernels come from the ISA table
// selected at load time (see select_table).
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.h"
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

SK_DECLARE_TABLE(isa_baseline)
#ifdef SK_HAVE_AVX2
SK_DECLARE_TABLE(isa_avx2)
#endif
#ifdef SK_HAVE_AVX512
SK_DECLARE_TABLE(isa_avx512)
#endif
#ifdef SK_HAVE_NEON
SK_DECLARE_TABLE(isa_neon)
#endif

namespace py = pybind11;

#include "act_scalar.inc"

namespace sk {

// Denormals flushed to zero (inputs and results) while the engine computes, as TensorFlow and OpenVINO run
// inference: on x86 every FMA that meets a denormal takes a microcode assist (~100+ cycles). Sigmoid / SiLU
// tails (exp clamped at -87.3) and squeeze-excitation gates near 0 produce them: efficientnet_b0's
// stage-6 1x1 convs ran 4x slower on inputs scaled by ~1e-38 gates. A value below 1.18e-38 becomes 0 (absolute
// change < 1.2e-38). RAII: the caller's mode (e.g. numpy's thread) is restored.
struct FlushDenormals {
#if defined(__x86_64__) || defined(__i386__)
  unsigned saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
  ~FlushDenormals() { _mm_setcsr(saved); }
#elif defined(__aarch64__)
  uint64_t saved;
  FlushDenormals() {  // FPCR.FZ (bit 24)
    asm volatile("mrs %0, fpcr" : "=r"(saved));
    asm volatile("msr fpcr, %0" : : "r"(saved | (1ull << 24)));
  }
  ~FlushDenormals() { asm volatile("msr fpcr, %0" : : "r"(saved)); }
#endif
};

// ---------------------------------------------------------------- ISA selection
static std::vector<const KernelTable*> available_tables() {
  std::vector<const KernelTable*> t;  // best first
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#ifdef SK_HAVE_AVX512
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    t.push_back(&isa_avx512::table);
#endif
#ifdef SK_HAVE_AVX2
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) t.push_back(&isa_avx2::table);
#endif
#endif
#if defined(__aarch64__) && defined(SK_HAVE_NEON)
  t.push_back(&isa_neon::table);  // Advanced SIMD is mandatory on aarch64
#endif
  t.push_back(&isa_baseline::table);
  return t;
}

// ---------------------------------------------------------------- aligned storage
template <class T>
struct Buf {
  T* p = nullptr; size_t n = 0;
  Buf() = default;
  explicit Buf(size_t n_) { alloc(n_); }
  void alloc(size_t n_) {
    release(); n = n_;
    size_t bytes = ((n * sizeof(T) + 63) / 64) * 64 + 64;
    p = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, bytes);
  }
  void release() { std::free(p); p = nullptr; n = 0; }
  ~Buf() { release(); }
  Buf(const Buf&) = delete; Buf& operator=(const Buf&) = delete;
  Buf(Buf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; o.n = 0; }
  Buf& operator=(Buf&& o) noexcept { release(); p = o.p; n = o.n; o.p = nullptr; o.n = 0; return *this; }
};

template <class T>
static Buf<T> copy_array(const py::array& a) {
  py::array_t<T, py::array::c_style | py::array::forcecast> c(a);
  Buf<T> b(std::max<size_t>(c.size(), 1));
  if (c.size()) std::memcpy(b.p, c.data(), c.size() * sizeof(T));
  b.n = c.size();
  return b;
}

// ---------------------------------------------------------------- work pool
// Image-parallel runs: the caller claims work items itself and helpers claim the rest if they are
// running; run() returns once every item is done and never waits for a helper that has not started
// (an OpenMP join would: on an oversubscribed machine that costs a scheduler quantum per call).
class Pool {
  struct Job {
    std::function<void(int, int)> f;
    int total = 0;
    std::atomic<int> next{0}, done{0};
  };
  std::mutex m_;
  std::condition_variable cv_;
  std::shared_ptr<Job> cur_;
  std::atomic<uint64_t> gen_{0};
  bool stop_ = false;
  std::vector<std::thread> th_;

  static void drain(Job& j, int slot) {
    for (;;) {
      int i = j.next.fetch_add(1);
      if (i >= j.total) break;
      j.f(i, slot);
      j.done.fetch_add(1, std::memory_order_release);
    }
  }
  void worker(int slot) {
    uint64_t seen = 0;
    for (;;) {
      // spin briefly for the next job (back-to-back runs), then sleep
      for (int k = 0; k < 2000 && gen_.load(std::memory_order_acquire) == seen; k++) std::this_thread::yield();
      std::shared_ptr<Job> j;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || gen_.load() != seen; });
        if (stop_) return;
        seen = gen_.load();
        j = cur_;
      }
      if (j) drain(*j, slot);
    }
  }

 public:
  ~Pool() {
    { std::lock_guard<std::mutex> lk(m_); stop_ = true; }
    cv_.notify_all();
    for (auto& t : th_) t.join();
  }
  void run(int total, int threads, std::function<void(int, int)> f) {
    while ((int)th_.size() < threads - 1) { int slot = (int)th_.size() + 1; th_.emplace_back([this, slot] { worker(slot); }); }
    auto j = std::make_shared<Job>();
    j->f = std::move(f); j->total = total;
    { std::lock_guard<std::mutex> lk(m_); cur_ = j; gen_.fetch_add(1); }
    cv_.notify_all();
    drain(*j, 0);
    while (j->done.load(std::memory_order_acquire) < total) std::this_thread::yield();
    std::lock_guard<std::mutex> lk(m_);
    cur_.reset();
  }
};

// ---------------------------------------------------------------- plan structures
struct Tensor {   // per-image layout; image i of a chunk at arena + off + i * istride
  int C, H, W, pt, pb, pl, pr, Hp, Wp;
  int64_t plane, off, istride;
  // > 0: the interleaved batch layout (KernelTable::conv_il): the whole chunk of `il` images in one block,
  // lane k of each vector = image k; W, pl, pr, Wp are in floats (positions x il), istride is 0
  int il = 0;
  int64_t sample() const { return (int64_t)C * H * (il ? W / il : W); }  // floats per image, unpadded
};

enum OpKind { OP_CONV = 0, OP_FC = 1, OP_MAXPOOL = 2, OP_AVGPOOL = 3, OP_GAP = 4, OP_BINARY = 5,
              OP_AFFINE = 6, OP_CONCAT = 7, OP_FLATTEN = 8 };

// op j (earlier in a row chain) and op k touch the same memory: as the same tensor layout (rows map 1:1,
// k's row waits for j's rows), or not (whole: k waits until j has finished)
struct Hazard { int j, role_j, role_k; bool whole; };

struct Op {
  int kind = 0;
  std::vector<int64_t> ip;   // integer params (layout per kind, see planner.py)
  std::vector<float> fp;     // float params
  std::vector<Buf<float>> fa;
  std::vector<Buf<uint32_t>> ua;
  int variant = 0;           // conv/fc: 0 sparse, 1 dense (conv: blocks of ob), 2 conv dense "oc" form
  int kept = 0;              // bit v: keep_variant left variant v's storage (0: every variant still packed)
  int oc_nblk = 0;           // conv with the oc form (fa[3]: [G][oc_nblk][ntaps][2 vw]): units per group, else 0
  bool dw_cl = false;        // depthwise conv whose oc form is conv_dw_cl (fa[3]: [oc_nblk][ntaps][vw], all channels)
  // conv/fc: the ISA table of the sparse kernels (null: the engine's). The sparse format (CSR offsets) is
  // the same for every ISA, the dense one is not (blocks of the table's ob), so only the sparse kernels can
  // take another ISA's code: on AVX-512 CPUs the avx2 sparse kernels measured faster on some layers
  // (docs/benchmarks.md, AVX-512 spot check) while avx512 wins the dense ones
  const KernelTable* skt = nullptr;
  bool batched = false;      // dense stride-1 conv at nb > 1: tiles across the chunk's images (conv_dense_multi)
  bool il_blocks = true;     // interleaved sparse conv: run the input-channel blocks the plan packed (ua[3])
  int chain_len = 0;          // >= 2: the first of chain_len interleaved convs run as a row wavefront (exec_row_chain)
  std::vector<Hazard> hz;     // in a chain: the rows this op shares with earlier ops of it (row_ready)
  std::vector<uint32_t> cost_prefix;  // sparse conv/fc: cumulative cost per output channel
  std::vector<int32_t> cmask;        // conv: padding-column mask of the flat output rows (see ConvCall)
  std::vector<uint8_t> phase_used;   // sparse stride-s conv: [phase][channel] read by any non-zero
  std::vector<uint32_t> ucols;        // sparse fc: input columns with any non-zero (only those are packed)
  Buf<float> fcp;                     // dense fc: the weights in panels of FC_PANEL rows (FcCall::wp); fa[1] freed
  // pools (see exec_pool): per output row kh0, kh1 (valid kernel rows) and the interior columns' divisor,
  // per output column kw0, kw1; the columns [pow0, pow1) and rows [poh0, poh1) of wholly inside windows
  std::vector<int> prow, pcol; std::vector<float> pdiv; int pow0 = 0, pow1 = 0, poh0 = 0, poh1 = 0;
};

// conv ip: in, out, res, O, Cg, groups, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr(unused), Ho, Wo,
//          act, mode(0 = stride-1 view, 1 = phase planes), Wrow, Hq, gofs, ntaps, nblk, has_bias,
//          phase bitmask (which of the sh*sw phase planes any tap reads), s2 direct (1: stride-2 conv whose
//          sparse offsets address the padded input itself, see KernelTable::conv_sparse_s2; dense keeps
//          the phase planes)
// conv fa: [0] sparse val, [1] dense weights, [2] bias ; ua: [0] rowptr, [1] off, [2] dense tap offsets
enum { C_IN, C_OUT, C_RES, C_O, C_CG, C_G, C_KH, C_KW, C_SH, C_SW, C_DH, C_DW, C_PT, C_PL, C_PB, C_PR,
       C_HO, C_WO, C_ACT, C_MODE, C_WROW, C_HQ, C_GOFS, C_NTAPS, C_NBLK, C_HASB, C_PHASES, C_S2D, C_N };
// fc ip: in, out, res, F, O, act, has_bias ; fa: [0] sparse val, [1] dense w, [2] bias; ua: rowptr, col
enum { F_IN, F_OUT, F_RES, F_F, F_O, F_ACT, F_HASB, F_N };

struct Engine {
  const KernelTable* kt;
  std::vector<Tensor> tensors;
  std::vector<Op> ops;
  int input_t = -1, output_t = -1, bc = 1;
  int64_t arena_floats = 0, shared_off = 0, shared_floats = 0, private_floats = 0;
  std::vector<Buf<float>> arenas;   // one per thread
  std::unique_ptr<Pool> pool;
  // one chunk and several threads: split output channels across the team only when the chunk (its images x
  // work_macs) has at least this many executed MACs; below it the per-op barriers cost more than they save
  // (and on an oversubscribed machine a barrier can wait a whole scheduler quantum), so it runs on one thread
  int64_t work_macs = 0, par_min_macs = 8000000;
  // per-op profiler: wall time per op, accumulated per worker slot (image-parallel runs time each op on
  // every slot, channel-parallel runs on thread 0 including the op's barrier)
  bool profiling = false;
  std::vector<std::vector<double>> prof_us;
  bool row_chains = true, chains_known = false;  // exec_row_chain on (set_row_chains); chosen at first run

  explicit Engine(const std::string& isa) {
    auto t = available_tables();
    kt = nullptr;
    if (isa.empty() || isa == "auto") kt = t.front();
    for (auto* x : t) if (isa == x->name) kt = x;
    if (!kt) throw std::invalid_argument("ISA '" + isa + "' is not available on this CPU/build");
  }

  int add_tensor(std::vector<int64_t> d) {
    Tensor t{(int)d[0], (int)d[1], (int)d[2], (int)d[3], (int)d[4], (int)d[5], (int)d[6], 0, 0, 0, d[7], d[8]};
    if (d.size() > 9) {
      t.il = (int)d[9];
      if (t.il && (t.il != kt->vw || t.W % t.il || t.pl % t.il || t.pr % t.il || t.istride))
        throw std::invalid_argument("interleaved tensor: lanes must be the ISA's vector width, widths multiples of it");
    }
    t.Hp = t.H + t.pt + t.pb; t.Wp = t.W + t.pl + t.pr; t.plane = (int64_t)t.Hp * t.Wp;
    tensors.push_back(t);
    return (int)tensors.size() - 1;
  }

  int add_op(int kind, std::vector<int64_t> ip, std::vector<float> fp, std::vector<py::array> fa,
             std::vector<py::array> ua) {
    Op op; op.kind = kind; op.ip = std::move(ip); op.fp = std::move(fp);
    for (auto& a : fa) op.fa.push_back(copy_array<float>(a));
    for (auto& a : ua) op.ua.push_back(copy_array<uint32_t>(a));
    if (kind == OP_CONV || kind == OP_FC) {
      int O = (int)(kind == OP_CONV ? op.ip[C_O] : op.ip[F_O]);
      op.cost_prefix.resize(O + 1);
      const uint32_t* rp = op.ua[0].p;
      for (int o = 0; o <= O; o++) op.cost_prefix[o] = rp[o] + 4u * o;  // nnz + epilogue cost
      op.variant = op.ua[0].p[O] == 0 && op.fa[1].n > 0 ? 1 : 0;
      if (kind == OP_CONV) {
        const int64_t Wrow = op.ip[C_WROW], Wo = op.ip[C_WO], L = (op.ip[C_HO] - 1) * Wrow + Wo;
        if (!tensors.at(op.ip[C_IN]).il) {  // (the interleaved kernel has no flat rows)
          op.cmask.assign(L + 256, 0);
          for (int64_t q = 0; q < L; q++) op.cmask[q] = q % Wrow < Wo ? -1 : 0;
        }
      }
      if (kind == OP_CONV && (int64_t)op.ip.size() != C_N)
        throw std::invalid_argument("conv op needs " + std::to_string((int)C_N) + " integer parameters");
      if (kind == OP_CONV && op.fa.size() > 3 && op.fa[3].n > 1) {  // the oc form, packed for this ISA's vw
        const int64_t ocb = 2 * kt->vw, Og = op.ip[C_O] / op.ip[C_G], nb2 = (Og + ocb - 1) / ocb;
        const int64_t G = op.ip[C_G], nu = (G + kt->vw - 1) / kt->vw;
        if (Og == 1 && op.ip[C_CG] == 1 && (int64_t)op.fa[3].n == nu * op.ip[C_NTAPS] * kt->vw) {
          // depthwise: conv_dw_cl (planner.build_conv packs it only without a residual, stride 1 or 2 direct)
          if (op.ip[C_RES] >= 0 || op.ip[C_NTAPS] > DW_S2_MAX_TAPS || (op.ip[C_MODE] != 0 && !op.ip[C_S2D]) ||
              op.ip[C_HO] * op.ip[C_WO] > DW_CL_MAX_POSITIONS)
            throw std::invalid_argument("conv channels-in-lanes depthwise weights on a conv it cannot run");
          op.dw_cl = true;
          op.oc_nblk = (int)nu;
        } else {
          if ((int64_t)op.fa[3].n != op.ip[C_G] * nb2 * op.ip[C_NTAPS] * ocb)
            throw std::invalid_argument("conv oc-form weights do not match this ISA's vector width");
          op.oc_nblk = (int)nb2;
        }
      }
      if (kind == OP_CONV && op.ip[C_MODE] != 0 && !op.ip[C_S2D]) {
        const int64_t C = tensors.at(op.ip[C_IN]).C, qplane = op.ip[C_HQ] * op.ip[C_WROW];
        const int64_t pstride = C * qplane + 64, nph = op.ip[C_SH] * op.ip[C_SW];
        op.phase_used.assign(nph * C, 0);
        for (uint32_t j = 0; j < rp[O]; j++) {
          const int64_t f = op.ua[1].p[j], ph = f / pstride, c = (f % pstride) / qplane;
          if (ph < nph && c < C) op.phase_used[ph * C + c] = 1;
        }
      }
      if (kind == OP_FC) {
        const int F = (int)op.ip[F_F];
        std::vector<char> used(F, 0);
        for (uint32_t j = 0; j < rp[O]; j++) used[op.ua[1].p[j]] = 1;
        for (int f = 0; f < F; f++) if (used[f]) op.ucols.push_back((uint32_t)f);
        if ((int64_t)op.fa[1].n == (int64_t)O * F) {  // dense [O][F] -> panels [ceil(O / P)][F][P], then
          const int64_t np = (O + FC_PANEL - 1) / FC_PANEL;   // only the panels are kept (fc_dense reads them)
          op.fcp.alloc((size_t)(np * F * FC_PANEL));          // zeroed: the last panel's rows past O
          const float* w = op.fa[1].p;
          for (int64_t o = 0; o < O; o++)
            for (int64_t f = 0; f < F; f++)
              op.fcp.p[(o / FC_PANEL) * F * FC_PANEL + f * FC_PANEL + o % FC_PANEL] = w[o * F + f];
          op.fa[1].release();
        }
        if (op.variant == 1 && !op.fcp.n) op.variant = 0;  // (no dense weights of the right size: sparse only)
      }
    }
    if (kind == OP_MAXPOOL || kind == OP_AVGPOOL) pool_geometry(op);
    ops.push_back(std::move(op));
    return (int)ops.size() - 1;
  }

  void set_memory(int in_t, int out_t, int bc_, int64_t arena, int64_t shoff, int64_t shfl, int64_t priv) {
    input_t = in_t; output_t = out_t; bc = bc_; arena_floats = arena; shared_off = shoff;
    shared_floats = shfl; private_floats = priv;
  }

  // a variant op i can run: packed at build and not freed by keep_variant (running a freed one would read
  // the 1-element stand-ins keep_variant leaves: out of bounds)
  static void check_variant(const Op& op, int v) {
    if (v < 0 || v > 2 || (v == 2 && !op.oc_nblk) || (op.kind == OP_FC && v == 1 && !op.fcp.n))
      throw std::invalid_argument("op has no kernel variant " + std::to_string(v));
    if (op.kept && !(op.kept >> v & 1))
      throw std::invalid_argument("kernel variant " + std::to_string(v) + " of this op was freed by keep_variant");
  }
  void set_variant(int i, int v) {
    Op& op = ops.at(i);
    check_variant(op, v);
    op.variant = v;
    chains_known = false;  // (exec_row_chain runs conv_il / conv_il_dense only)
  }
  bool has_oc(int i) const { return ops.at(i).oc_nblk > 0; }
  // free the storage of the formats that were not chosen: v, and `also` (>= 0) when a batched dense conv
  // runs per image in the oc form and its image-batched tiles (conv_dense_multi) in the blocked one
  void keep_variant(int i, int v, int also) {
    Op& op = ops.at(i);
    check_variant(op, v);
    if (also >= 0) check_variant(op, also);
    const int keep = 1 << v | (also >= 0 ? 1 << also : 0);
    auto drop = [](auto& b) { b.alloc(1); b.n = 0; };
    if (!(keep & 1)) { drop(op.fa[0]); drop(op.ua[1]); }
    if (!(keep & 2)) { drop(op.fa[1]); drop(op.fcp); if (op.kind == OP_CONV) op.batched = false; }
    if (!(keep & 4) && op.fa.size() > 3) { drop(op.fa[3]); op.oc_nblk = 0; op.dw_cl = false; }
    if (op.kind == OP_CONV || op.kind == OP_FC) op.kept = keep;
  }
  // dense conv at nb > 1 through conv_dense_multi: reads the blocked weights, whatever the per-image variant
  void set_batched(int i, bool on) {
    Op& op = ops.at(i);
    if (on) check_variant(op, 1);
    op.batched = on;
  }

  void ensure_arenas(int nt) {
    while ((int)arenas.size() < nt) arenas.emplace_back(arena_floats + private_floats + 1024);
  }

  const KernelTable* sparse_table(const Op& op) const { return op.skt ? op.skt : kt; }

  void set_sparse_isa(int i, const std::string& name) {
    Op& op = ops.at(i);
    if (name.empty() || name == kt->name) { op.skt = nullptr; return; }
    for (auto* t : available_tables())
      if (name == t->name) {
        if (t->vw > kt->vw) throw std::invalid_argument("sparse ISA '" + name + "' is wider than the engine's");
        op.skt = t; return;
      }
    throw std::invalid_argument("ISA '" + name + "' is not available on this CPU/build");
  }

  float* tp(float* arena, int t, int img) { return arena + tensors[t].off + img * tensors[t].istride; }

  // -------------------------------------------------------------- op execution
  // par: the op is executed by the whole team (tid/nth), else by the calling thread alone
  static void split(int64_t n, int tid, int nth, int64_t& b, int64_t& e) {
    b = n * tid / nth; e = n * (tid + 1) / nth;
  }
  static void split_cost(const std::vector<uint32_t>& pre, int tid, int nth, int64_t& b, int64_t& e) {
    int64_t n = (int64_t)pre.size() - 1;
    if (nth == 1) { b = 0; e = n; return; }
    uint64_t total = pre[n];
    auto find = [&](int k) -> int64_t {
      uint64_t target = total * k / nth;
      return std::lower_bound(pre.begin(), pre.end(), (uint32_t)target) - pre.begin();
    };
    b = tid == 0 ? 0 : std::min(find(tid), n);
    e = tid == nth - 1 ? n : std::min(find(tid + 1), n);
    if (e < b) e = b;
  }
  static void barrier(bool par) {
#ifdef _OPENMP
    if (par) {
#pragma omp barrier
    }
#endif
  }

  // the kernel call for one image; xwork: the conv's work view (default: the stride-1 view of the input)
  ConvCall conv_call(Op& op, float* A, float* priv, int img, const float* xwork = nullptr) {
    auto& p = op.ip;
    const Tensor& ti = tensors[p[C_IN]];
    const Tensor& to = tensors[p[C_OUT]];
    const Tensor* tr = p[C_RES] >= 0 ? &tensors[p[C_RES]] : nullptr;
    const int Wrow = (int)p[C_WROW];
    if (!xwork) xwork = tp(A, (int)p[C_IN], img) + (int64_t)(ti.pt - p[C_PT]) * ti.Wp + (ti.pl - p[C_PL]);
    ConvCall c{};
    c.x = xwork; c.x_row = ti.Wp; c.Wrow = Wrow; c.Ho = (int)p[C_HO]; c.Wo = (int)p[C_WO];
    c.L = (c.Ho - 1) * Wrow + c.Wo;
    c.rowptr = op.ua[0].p; c.off = op.ua[1].p; c.val = op.fa[0].p;
    c.doff = op.ua[2].p; c.dw = op.fa[1].p; c.ntaps = (int)p[C_NTAPS];
    c.Og = (int)(p[C_O] / p[C_G]); c.nblk = (int)p[C_NBLK]; c.gofs = p[C_GOFS];
    c.bias = p[C_HASB] ? op.fa[2].p : nullptr;
    c.y = tp(A, (int)p[C_OUT], img); c.y_plane = to.plane; c.y_Wp = to.Wp; c.y_Hp = to.Hp;
    c.y_pt = to.pt; c.y_pb = to.pb; c.y_pl = to.pl; c.y_pr = to.pr;
    if (tr) { c.r = tp(A, (int)p[C_RES], img); c.r_plane = tr->plane; c.r_Wp = tr->Wp; c.r_pt = tr->pt; c.r_pl = tr->pl; }
    c.flat = to.Wp == Wrow && (!tr || tr->Wp == Wrow);
    c.cmask = c.flat && !op.cmask.empty() ? op.cmask.data() : nullptr;
    c.scratch = priv; c.scratch_plane = (int64_t)c.Ho * Wrow + 512;
    c.act = (int)p[C_ACT]; c.a0 = op.fp[0]; c.a1 = op.fp[1];
    c.x_plane = ti.plane; c.xh = ti.H + (int)(p[C_PT] + p[C_PB]); c.xw = ti.W + (int)(p[C_PL] + p[C_PR]);
    c.Hq = (int)p[C_HQ]; c.kh = (int)p[C_KH]; c.kw = (int)p[C_KW]; c.dh = (int)p[C_DH]; c.dwl = (int)p[C_DW];
    c.sh = (int)p[C_SH]; c.sw = (int)p[C_SW]; c.groups = (int)p[C_G];
    c.ih = ti.H; c.iw = ti.W; c.ipt = (int)p[C_PT]; c.ipl = (int)p[C_PL];
    return c;
  }

  // an interleaved-layout conv's call: conv_call's fields, then the interleaved ones (strides, the output
  // width in floats, the input-channel blocks build_conv_il packed)
  ConvCall il_call(Op& op, float* A, float* priv) {
    auto& p = op.ip;
    ConvCall c = conv_call(op, A, priv, 0);
    c.sh = (int)p[C_SH]; c.sw = (int)p[C_SW]; c.Wo = (int)p[C_WO] * tensors[p[C_IN]].il;
    const int64_t O = p[C_O];
    if (op.variant != 1 && op.il_blocks && op.ua.size() > 3 && (int64_t)op.ua[3].n > 2 * O) {
      c.cbptr = op.ua[3].p; c.ncb = (int)(op.ua[3].n / O) - 1;
    }
    return c;
  }
  void run_il(Op& op, const ConvCall& c, bool par, int tid, int nth) {
    int64_t b, e;
    if (op.variant == 1) {  // dense: blocks of ob output channels (conv_dense's weights, interleaved offsets)
      split(op.ip[C_G] * op.ip[C_NBLK], par ? tid : 0, par ? nth : 1, b, e);
      kt->conv_il_dense(c, (int)b, (int)e);
    } else {
      split_cost(op.cost_prefix, par ? tid : 0, par ? nth : 1, b, e);
      kt->conv_il(c, (int)b, (int)e);
    }
  }

  // ---- consecutive interleaved convs as a row wavefront (one thread) ----
  // A chain of convs runs row by row: the first one row at a time, each later one as many rows as it can.
  // Every tensor a conv reads is then read back from L1 / L2 a few rows after it was written, instead of from
  // L3 after a whole tensor (resnet20's 32x32 stage at 16 images per chunk: 1.2 MB per tensor, three live in
  // a residual block; L2 is 2 MB). Order is kept where ops touch the same memory (a residual conv storing
  // over its residual; the memory plan reusing a dead tensor's block): for ops j < k, k's row waits until j
  // has written what k reads or writes, and has read what k overwrites. Per row the same kernels and
  // arithmetic: the same bits as running the convs one after the other.
  struct Extent { int64_t lo, hi; };
  Extent extent(int t) const { const Tensor& x = tensors[t]; return {x.off, x.off + (int64_t)x.C * x.plane}; }
  static bool overlap(Extent a, Extent b) { return a.lo < b.hi && b.lo < a.hi; }
  bool same_layout(int a, int b) const {
    const Tensor &x = tensors[a], &y = tensors[b];
    return x.off == y.off && x.C == y.C && x.plane == y.plane && x.Wp == y.Wp && x.pt == y.pt && x.Hp == y.Hp;
  }
  enum Role { R_IN = 0, R_RES = 1, R_OUT = 2 };
  // padded rows of tensor `role` that op's output rows [r, r] touch (reads: the rows its taps / residual read;
  // writes: the row, with the top pad rows at row 0 and the bottom ones at the last row)
  void touched(const Op& op, int role, int r, int64_t& lo, int64_t& hi) const {
    const auto& p = op.ip;
    if (role == R_IN) {
      const int64_t base = (int64_t)r * p[C_SH] + tensors[p[C_IN]].pt - p[C_PT];
      lo = base; hi = base + (p[C_KH] - 1) * p[C_DH];
    } else if (role == R_RES) {
      lo = hi = r + tensors[p[C_RES]].pt;
    } else {
      const Tensor& t = tensors[p[C_OUT]];
      lo = r == 0 ? 0 : r + t.pt; hi = r + 1 == p[C_HO] ? t.Hp - 1 : r + t.pt;
    }
  }
  int role_tensor(const Op& op, int role) const {
    return (int)(role == R_IN ? op.ip[C_IN] : role == R_RES ? op.ip[C_RES] : op.ip[C_OUT]);
  }
  bool chainable(const Op& op) const {
    return op.kind == OP_CONV && op.variant != 2 && tensors[op.ip[C_IN]].il && tensors[op.ip[C_OUT]].il;
  }
  // the hazards of ops[k] against ops[c0 .. k)
  void hazards(size_t c0, size_t k, std::vector<Hazard>& hz) const {
    hz.clear();
    for (size_t j = c0; j < k; j++)
      for (int rj = 0; rj < 3; rj++)
        for (int rk = 0; rk < 3; rk++) {
          if (rj != R_OUT && rk != R_OUT) continue;  // two reads never conflict
          const int tj = role_tensor(ops[j], rj), tk = role_tensor(ops[k], rk);
          if (tj < 0 || tk < 0 || !overlap(extent(tj), extent(tk))) continue;
          hz.push_back({(int)j, rj, rk, !same_layout(tj, tk)});
        }
  }
  void choose_row_chains() {
    for (auto& op : ops) { op.chain_len = 0; op.hz.clear(); }
    chains_known = true;
    if (!row_chains) return;
    for (size_t i = 0; i < ops.size();) {
      if (!chainable(ops[i])) { i++; continue; }
      size_t k = i + 1;
      while (k < ops.size() && chainable(ops[k])) { hazards(i, k, ops[k].hz); k++; }
      if (k - i >= 2) ops[i].chain_len = (int)(k - i);
      else ops[i].hz.clear();
      i = k;
    }
  }
  // may op k (chain position of ops[c0 + ...]) run output row r, given the rows done of the earlier ops?
  bool row_ready(const Op& op, int r, const std::vector<int>& done, size_t c0) const {
    for (const Hazard& h : op.hz) {
      const Op& oj = ops[h.j];
      const int dj = done[h.j - c0];
      if (dj >= oj.ip[C_HO]) continue;  // j finished
      if (h.whole) return false;
      int64_t lo, hi;
      touched(op, h.role_k, r, lo, hi);
      if (h.role_j == R_OUT) {  // j writes: k's rows must be written already (padded rows < the next row's)
        int64_t nlo, nhi;
        touched(oj, R_OUT, dj, nlo, nhi);
        if (hi >= nlo) return false;
      } else {  // j reads, k writes: j must have read past them
        int64_t nlo, nhi;
        touched(oj, h.role_j, dj, nlo, nhi);
        if (hi >= nlo) return false;
      }
    }
    return true;
  }
  void exec_row_chain(size_t c0, int n, float* A, float* priv, std::vector<double>* prof) {
    std::vector<ConvCall> calls;
    std::vector<int> done(n, 0);
    for (int k = 0; k < n; k++) calls.push_back(il_call(ops[c0 + k], A, priv));
    auto run_rows = [&](int k, int r0, int r1) {
      ConvCall& c = calls[k];
      c.oh0 = r0; c.oh1 = r1;
      if (!prof) { run_il(ops[c0 + k], c, false, 0, 1); return; }
      auto t0 = std::chrono::steady_clock::now();
      run_il(ops[c0 + k], c, false, 0, 1);
      (*prof)[c0 + k] += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    };
    for (bool busy = true; busy;) {
      busy = false;
      for (int k = 0; k < n; k++) {
        const Op& op = ops[c0 + k];
        const int Ho = (int)op.ip[C_HO];
        int e = done[k];
        const int lim = k == 0 ? std::min(Ho, e + 1) : Ho;  // the first op leads, a row at a time
        while (e < lim && row_ready(op, e, done, c0)) e++;
        if (e > done[k]) { run_rows(k, done[k], e); done[k] = e; }
        if (done[k] < Ho) busy = true;
      }
    }
  }

  void exec_conv(Op& op, float* A, float* priv, int nb, bool par, int tid, int nth) {
    auto& p = op.ip;
    const Tensor& ti = tensors[p[C_IN]];
    const Tensor& to = tensors[p[C_OUT]];
    const Tensor* tr = p[C_RES] >= 0 ? &tensors[p[C_RES]] : nullptr;
    const int C = ti.C, sh = (int)p[C_SH], sw = (int)p[C_SW];
    const int Wrow = (int)p[C_WROW], Hq = (int)p[C_HQ];
    const int64_t qplane = (int64_t)Hq * Wrow;
    const int L = (int)((p[C_HO] - 1) * Wrow + p[C_WO]);
    const KernelTable* st = sparse_table(op);
    if (ti.il) {  // interleaved batch layout: the chunk's images are the lanes, one call for all of them
      run_il(op, il_call(op, A, priv), par, tid, nth);
      barrier(par);
      return;
    }
    if (p[C_MODE] == 0 && nb > 1 && op.variant == 0 && L <= 4 * st->vw) {
      // small maps: several images per register tile (each non-zero loaded once for all of them)
      ConvCall cs[64];
      int64_t b, e;
      split_cost(op.cost_prefix, par ? tid : 0, par ? nth : 1, b, e);
      for (int i0 = 0; i0 < nb; i0 += 64) {
        const int ni = std::min(64, nb - i0);
        for (int k = 0; k < ni; k++) cs[k] = conv_call(op, A, priv, i0 + k);
        st->conv_sparse_multi(cs, ni, (int)b, (int)e);
      }
      barrier(par);
      return;
    }
    if (p[C_MODE] == 0 && nb > 1 && op.variant != 0 && op.batched) {
      // dense, chosen by timing (small maps): register tiles across the chunk's images, weights read once
      // (the blocked weights, also when a single image runs the oc form)
      ConvCall cs[64];
      int64_t b, e;
      split(p[C_G] * p[C_NBLK], par ? tid : 0, par ? nth : 1, b, e);
      for (int i0 = 0; i0 < nb; i0 += 64) {
        const int ni = std::min(64, nb - i0);
        for (int k = 0; k < ni; k++) cs[k] = conv_call(op, A, priv, i0 + k);
        kt->conv_dense_multi(cs, ni, (int)b, (int)e);
      }
      barrier(par);
      return;
    }
    const bool s2_direct = p[C_MODE] != 0 && p[C_S2D] && op.variant == 0;
    // dense depthwise stride 2: phase planes per channel inside the kernel (conv_dw_s2), not shared ones here
    const bool dw_s2 = p[C_MODE] != 0 && p[C_S2D] && op.variant == 1 && p[C_CG] == 1 && p[C_O] == p[C_G] &&
                       p[C_KH] * p[C_KW] <= DW_S2_MAX_TAPS;
    // channels-in-lanes depthwise (conv_dw_cl): reads the padded input itself at any stride
    const bool dw_cl = op.variant == 2 && op.dw_cl;
    for (int img = 0; img < nb; img++) {
      const float* xin = tp(A, (int)p[C_IN], img);
      const float* xwork;
      if (p[C_MODE] == 0 || s2_direct || dw_s2 || dw_cl) {
        xwork = xin + (int64_t)(ti.pt - p[C_PT]) * ti.Wp + (ti.pl - p[C_PL]);
      } else {  // de-interleave the (virtually) padded input into sh*sw phase planes
        float* ph = A + shared_off;
        const int64_t pstride = (int64_t)C * qplane + 64;
        int64_t c0, c1; split(C, par ? tid : 0, par ? nth : 1, c0, c1);
        const int64_t mask = p[C_PHASES];
        for (int a = 0; a < sh; a++) for (int b = 0; b < sw; b++) {
          if (!((mask >> (a * sw + b)) & 1)) continue;  // no tap reads this phase
          float* dst = ph + (a * sw + b) * pstride;
          // output columns j whose source column w = j*sw + b - pl lies inside [0, W)
          int j0 = 0;
          while (j0 < Wrow && j0 * sw + b - (int)p[C_PL] < 0) j0++;
          int j1 = j0;
          while (j1 < Wrow && j1 * sw + b - (int)p[C_PL] < ti.W) j1++;
          const uint8_t* used = op.variant == 0 && !op.phase_used.empty() ? &op.phase_used[(a * sw + b) * C] : nullptr;
          for (int64_t c = c0; c < c1; c++) {
            if (used && !used[c]) continue;  // the sparse kernel never reads this plane
            const float* src = xin + c * ti.plane;
            float* dc = dst + c * qplane;
            for (int i = 0; i < Hq; i++) {
              int h = i * sh + a - (int)p[C_PT];
              float* drow = dc + (int64_t)i * Wrow;
              if (h < 0 || h >= ti.H) { std::memset(drow, 0, sizeof(float) * Wrow); continue; }
              const float* srow = src + (int64_t)(h + ti.pt) * ti.Wp + ti.pl + b - (int)p[C_PL];
              for (int j = 0; j < j0; j++) drow[j] = 0.f;
              if (sw == 2) kt->gather2(srow + 2 * j0, drow + j0, j1 - j0);
              else for (int j = j0; j < j1; j++) drow[j] = srow[j * sw];
              for (int j = j1; j < Wrow; j++) drow[j] = 0.f;
            }
          }
        }
        barrier(par);
        xwork = ph;
      }
      ConvCall c = conv_call(op, A, priv, img, xwork);
      int64_t b, e;
      if (dw_cl) {  // units of vw channels
        c.dw = op.fa[3].p;
        split(op.oc_nblk, par ? tid : 0, par ? nth : 1, b, e);
        kt->conv_dw_cl(c, (int)b, (int)e);
      } else if (dw_s2) {
        split(p[C_G], par ? tid : 0, par ? nth : 1, b, e);
        kt->conv_dw_s2(c, (int)b, (int)e);
      } else if (op.variant == 0) {
        split_cost(op.cost_prefix, par ? tid : 0, par ? nth : 1, b, e);
        if (s2_direct) st->conv_sparse_s2(c, (int)b, (int)e);
        else st->conv_sparse(c, (int)b, (int)e);
      } else if (op.variant == 2) {
        c.dw = op.fa[3].p; c.nblk = op.oc_nblk;
        split(p[C_G] * op.oc_nblk, par ? tid : 0, par ? nth : 1, b, e);
        kt->conv_dense_oc(c, (int)b, (int)e);
      } else {
        split(p[C_G] * p[C_NBLK], par ? tid : 0, par ? nth : 1, b, e);
        kt->conv_dense(c, (int)b, (int)e);
      }
      barrier(par);
    }
  }

  void exec_fc(Op& op, float* A, int nb, bool par, int tid, int nth) {
    auto& p = op.ip;
    const Tensor& ti = tensors[p[F_IN]];
    const Tensor& to = tensors[p[F_OUT]];
    const int F = (int)p[F_F], O = (int)p[F_O];
    FcCall c{};
    c.F = F; c.nb = nb; c.rowptr = op.ua[0].p; c.col = op.ua[1].p; c.val = op.fa[0].p;
    c.wp = op.fcp.p; c.O = O;
    c.bias = p[F_HASB] ? op.fa[2].p : nullptr;
    c.y = tp(A, (int)p[F_OUT], 0); c.ldy = to.istride;
    if (p[F_RES] >= 0) { c.r = tp(A, (int)p[F_RES], 0); c.ldr = tensors[p[F_RES]].istride; }
    c.act = (int)p[F_ACT]; c.a0 = op.fp[0]; c.a1 = op.fp[1];
    const float* x0 = tp(A, (int)p[F_IN], 0);
    c.x = x0; c.ldx = ti.istride;
    int64_t b, e;
    if (op.variant != 0) {  // dense: the panels, every image straight from its own row; whole panels per thread
      split((O + FC_PANEL - 1) / FC_PANEL, par ? tid : 0, par ? nth : 1, b, e);
      kt->fc_dense(c, (int)std::min<int64_t>(b * FC_PANEL, O), (int)std::min<int64_t>(e * FC_PANEL, O));
      barrier(par);
      return;
    }
    if (nb > 1) {  // sparse, batched: the batch in the vector lanes
      const int vw = kt->vw;  // >= the sparse table's (set_sparse_isa), both powers of two
      c.nbp = (nb + vw - 1) / vw * vw;
      float* xT = A + shared_off;
      // the sparse kernel reads only the columns that hold non-zeros: pack just those
      const bool sub = (int64_t)op.ucols.size() < F;
      const int64_t nf = sub ? (int64_t)op.ucols.size() : F;
      split(nf, par ? tid : 0, par ? nth : 1, b, e);
      for (int64_t i = b; i < e; i++) {
        const int64_t f = sub ? op.ucols[i] : i;
        float* d = xT + f * c.nbp;
        for (int n = 0; n < nb; n++) d[n] = x0[n * ti.istride + f];
        for (int n = nb; n < c.nbp; n++) d[n] = 0.f;
      }
      barrier(par);
      c.xT = xT;
    }
    split_cost(op.cost_prefix, par ? tid : 0, par ? nth : 1, b, e);
    sparse_table(op)->fc_sparse(c, (int)b, (int)e);
    barrier(par);
  }

  static void zero_ring(const Tensor& t, float* pl) {
    if (t.pt) std::memset(pl, 0, sizeof(float) * t.pt * t.Wp);
    if (t.pb) std::memset(pl + (int64_t)(t.pt + t.H) * t.Wp, 0, sizeof(float) * t.pb * t.Wp);
    if (t.pl || t.pr)
      for (int h = 0; h < t.H; h++) {
        float* row = pl + (int64_t)(h + t.pt) * t.Wp;
        for (int i = 0; i < t.pl; i++) row[i] = 0.f;
        for (int i = t.pl + t.W; i < t.Wp; i++) row[i] = 0.f;
      }
  }
  static inline float* at(const Tensor& t, float* base, int c, int h, int w) {
    return base + c * t.plane + (int64_t)(h + t.pt) * t.Wp + (w + t.pl);
  }

  // pool ip: in, out, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr, count_include_pad
  // Padded taps are skipped (MaxPool's -inf padding; AvgPool's count from count_include_pad). Per output
  // row the valid kernel rows [kh0, kh1) are known (pool_geometry, once per op); the columns whose window
  // lies wholly inside the input width go to the ISA kernel (pool_rows: vectorized for stride 1 and 2; the
  // rows of wholly inside windows and every channel of the thread's range in one call) with only those
  // kernel rows, the few border columns to the clipped scalar loop below. Both visit the valid
  // taps in (kh, kw) order, max by `v > m` from -inf and sum from +0: the same results as a bound-checked
  // loop over every tap, bit for bit (tests/unit/test_engine_pool.py).
  static void pool_taps(int s, int K, int d, int n, int& k0, int& k1) {  // valid taps of a window at s
    k0 = s >= 0 ? 0 : (-s + d - 1) / d;
    k1 = n - 1 - s < 0 ? 0 : std::min(K - 1, (n - 1 - s) / d) + 1;
    if (k1 < k0) k1 = k0;
  }
  void pool_geometry(Op& op) {
    auto& p = op.ip;
    const Tensor& ti = tensors.at(p[0]);
    const Tensor& to = tensors.at(p[1]);
    const int KH = (int)p[2], KW = (int)p[3], sh = (int)p[4], sw = (int)p[5], dh = (int)p[6], dw = (int)p[7];
    const int pt = (int)p[8], pl = (int)p[9], pb = (int)p[10];
    const int spanh = (KH - 1) * dh + 1, spanw = (KW - 1) * dw + 1;
    const int tiW = ti.il ? ti.W / ti.il : ti.W, toW = to.il ? to.W / to.il : to.W;  // positions
    if (ti.il != to.il) throw std::invalid_argument("pool: input and output layouts differ");
    const int last = tiW - 1 + pl - (KW - 1) * dw;  // interior columns: ow * sw - pl >= 0, ow * sw <= last
    op.pow0 = std::min((pl + sw - 1) / sw, toW);
    op.pow1 = std::max(op.pow0, last < 0 ? 0 : std::min(toW, last / sw + 1));
    op.prow.resize(2 * to.H); op.pdiv.resize(to.H); op.pcol.resize(2 * toW);
    for (int oh = 0; oh < to.H; oh++) {
      const int hs = oh * sh - pt;
      int k0, k1;
      pool_taps(hs, KH, dh, ti.H, k0, k1);
      op.prow[2 * oh] = k0; op.prow[2 * oh + 1] = k1;
      op.pdiv[oh] = p[12] ? (float)((std::min(hs + spanh, ti.H + pb) - hs) * spanw) : (float)((k1 - k0) * KW);
    }
    for (int ow = 0; ow < toW; ow++) pool_taps(ow * sw - pl, KW, dw, tiW, op.pcol[2 * ow], op.pcol[2 * ow + 1]);
    op.poh0 = 0;
    while (op.poh0 < to.H && !(op.prow[2 * op.poh0] == 0 && op.prow[2 * op.poh0 + 1] == KH)) op.poh0++;
    op.poh1 = op.poh0;
    while (op.poh1 < to.H && op.prow[2 * op.poh1] == 0 && op.prow[2 * op.poh1 + 1] == KH) op.poh1++;
  }
  // interleaved layout: per lane exactly exec_pool's clipped window (`one`): valid taps in (kh, kw) order,
  // max by `v > m` from -inf, average from +0 divided as there: the same bits as the planar layout
  void pool_il(Op& op, float* A, bool par, int tid, int nth) {
    auto& p = op.ip;
    const Tensor& ti = tensors[p[0]];
    const Tensor& to = tensors[p[1]];
    const bool is_max = op.kind == OP_MAXPOOL;
    const int K = ti.il, tiW = ti.W / K, toW = to.W / K;
    const int KH = (int)p[2], sh = (int)p[4], sw = (int)p[5], dh = (int)p[6], dw = (int)p[7];
    const int pt = (int)p[8], pl = (int)p[9], pb = (int)p[10], pr = (int)p[11];
    const bool cip = p[12] != 0;
    const int spanh = (KH - 1) * dh + 1, spanw = ((int)p[3] - 1) * dw + 1;
    const float* xi = tp(A, (int)p[0], 0);
    float* yo = tp(A, (int)p[1], 0);
    int64_t c0, c1; split(to.C, par ? tid : 0, par ? nth : 1, c0, c1);
    float acc[64];
    for (int64_t c = c0; c < c1; c++) {
      const float* xc = xi + c * ti.plane;
      for (int oh = 0; oh < to.H; oh++) {
        const int hs = oh * sh - pt, kh0 = op.prow[2 * oh], kh1 = op.prow[2 * oh + 1];
        float* yr = yo + c * to.plane + (int64_t)(oh + to.pt) * to.Wp + to.pl;
        for (int ow = 0; ow < toW; ow++) {
          const int ws = ow * sw - pl, kw0 = op.pcol[2 * ow], kw1 = op.pcol[2 * ow + 1];
          for (int k = 0; k < K; k++) acc[k] = is_max ? -INFINITY : 0.f;
          for (int kh = kh0; kh < kh1; kh++) {
            const float* r = xc + (int64_t)(hs + kh * dh + ti.pt) * ti.Wp + ti.pl + (int64_t)ws * K;
            for (int kw = kw0; kw < kw1; kw++) {
              const float* v = r + (int64_t)kw * dw * K;
              if (is_max) for (int k = 0; k < K; k++) acc[k] = v[k] > acc[k] ? v[k] : acc[k];
              else for (int k = 0; k < K; k++) acc[k] += v[k];
            }
          }
          float* y = yr + (int64_t)ow * K;
          if (is_max) { for (int k = 0; k < K; k++) y[k] = acc[k]; continue; }
          int div = (kh1 - kh0) * (kw1 - kw0);
          if (cip) {
            int he = std::min(hs + spanh, ti.H + pb), we = std::min(ws + spanw, tiW + pr);
            div = (he - hs) * (we - ws);
          }
          for (int k = 0; k < K; k++) y[k] = div > 0 ? acc[k] / (float)div : 0.f;
        }
      }
      zero_ring(to, yo + c * to.plane);
    }
    barrier(par);
  }

  void exec_pool(Op& op, float* A, int nb, bool par, int tid, int nth) {
    auto& p = op.ip;
    const Tensor& ti = tensors[p[0]];
    const Tensor& to = tensors[p[1]];
    if (ti.il) { pool_il(op, A, par, tid, nth); return; }
    const bool is_max = op.kind == OP_MAXPOOL;
    const int KH = (int)p[2], KW = (int)p[3], sh = (int)p[4], sw = (int)p[5], dh = (int)p[6], dw = (int)p[7];
    const int pt = (int)p[8], pl = (int)p[9], pb = (int)p[10], pr = (int)p[11];
    const bool cip = p[12] != 0;
    const int spanh = (KH - 1) * dh + 1, spanw = (KW - 1) * dw + 1, ow0 = op.pow0, ow1 = op.pow1;
    auto one = [&](const float* xc, int hs, int kh0, int kh1, int ow) -> float {  // clipped scalar window
      const int ws = ow * sw - pl, kw0 = op.pcol[2 * ow], kw1 = op.pcol[2 * ow + 1];
      float acc = is_max ? -INFINITY : 0.f;
      for (int kh = kh0; kh < kh1; kh++) {
        const float* r = xc + (int64_t)(hs + kh * dh + ti.pt) * ti.Wp + ti.pl + ws;
        for (int kw = kw0; kw < kw1; kw++) {
          const float v = r[kw * dw];
          if (is_max) acc = v > acc ? v : acc; else acc += v;
        }
      }
      if (!is_max) {
        int div = (kh1 - kh0) * (kw1 - kw0);
        if (cip) {
          int he = std::min(hs + spanh, ti.H + pb), we = std::min(ws + spanw, ti.W + pr);
          div = (he - hs) * (we - ws);
        }
        acc = div > 0 ? acc / (float)div : 0.f;
      }
      return acc;
    };
    const int n = ow1 - ow0;
    for (int img = 0; img < nb; img++) {
      float* xi = tp(A, (int)p[0], img);
      float* yo = tp(A, (int)p[1], img);
      int64_t c0, c1; split(to.C, par ? tid : 0, par ? nth : 1, c0, c1);
      const int nch = (int)(c1 - c0);
      // interior columns: the rows of wholly inside windows in one call, then each border row (all its
      // valid kernel rows) for every channel of the range
      auto rows = [&](int oh, int nrows) {
        const int kh0 = op.prow[2 * oh], kh1 = op.prow[2 * oh + 1];
        if (kh1 <= kh0 || n <= 0 || nch <= 0) return;
        const float* x0 = at(ti, xi, (int)c0, oh * sh - pt + kh0 * dh, ow0 * sw - pl);
        kt->pool_rows(x0, ti.Wp, (int64_t)sh * ti.Wp, ti.plane, kh1 - kh0, KW, dh, dw, sw, is_max, op.pdiv[oh],
                      at(to, yo, (int)c0, oh, ow0), to.Wp, to.plane, n, nrows, nch);
      };
      if (op.poh1 > op.poh0) rows(op.poh0, op.poh1 - op.poh0);
      for (int oh = 0; oh < to.H; oh++) if (oh < op.poh0 || oh >= op.poh1) rows(oh, 1);
      for (int64_t c = c0; c < c1; c++) {
        const float* xc = xi + c * ti.plane;
        for (int oh = 0; oh < to.H; oh++) {
          const int hs = oh * sh - pt, kh0 = op.prow[2 * oh], kh1 = op.prow[2 * oh + 1];
          float* yr = at(to, yo, (int)c, oh, 0);
          if (kh1 <= kh0) for (int ow = ow0; ow < ow1; ow++) yr[ow] = one(xc, hs, kh0, kh1, ow);
          for (int ow = 0; ow < ow0; ow++) yr[ow] = one(xc, hs, kh0, kh1, ow);
          for (int ow = ow1; ow < to.W; ow++) yr[ow] = one(xc, hs, kh0, kh1, ow);
        }
        zero_ring(to, yo + c * to.plane);
      }
      barrier(par);
    }
  }

  void exec_gap(Op& op, float* A, int nb, bool par, int tid, int nth) {
    const Tensor& ti = tensors[op.ip[0]];
    const Tensor& to = tensors[op.ip[1]];
    if (ti.il) { gap_il(ti, to, A, op, nb, par, tid, nth); return; }
    for (int img = 0; img < nb; img++) {
      float* xi = tp(A, (int)op.ip[0], img);
      float* yo = tp(A, (int)op.ip[1], img);
      int64_t c0, c1; split(ti.C, par ? tid : 0, par ? nth : 1, c0, c1);
      if (ti.H * ti.W < 256) {  // small maps: 8 channels at a time, one chain each (the same order per
        // channel as the loop below: the same bits), so 8 adds are in flight instead of one
        // (efficientnet_b0's 17 squeeze-excitation GAPs: 169 -> 125 us per image, Session.profile)
        for (; c0 + 8 <= c1; c0 += 8) {
          float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
          for (int h = 0; h < ti.H; h++) {
            const float* r = at(ti, xi, (int)c0, h, 0);
            for (int w = 0; w < ti.W; w++)
              for (int k = 0; k < 8; k++) s[k] += r[k * ti.plane + w];
          }
          for (int k = 0; k < 8; k++) {
            zero_ring(to, yo + (c0 + k) * to.plane);
            *at(to, yo, (int)(c0 + k), 0, 0) = s[k] / (float)(ti.H * ti.W);
          }
        }
      }
      for (int64_t c = c0; c < c1; c++) {
        // maps of >= 256 floats: 8 running sums (element i of a run feeds sum i % 8), added pairwise at the
        // end; one sum chain waits a float add's latency per element (efficientnet_b0's 48x48 squeeze-
        // excitation GAP: 66 -> 15 us on Zen 3). Smaller maps: one chain (the 8 sums' setup and final adds
        // cost more there: 3x3 maps 9.6 -> 16.7 us). Either way a fixed order per shape, compiled once
        // (baseline): the same result on every ISA and thread count.
        if (ti.H * ti.W < 256) {
          float s = 0.f;
          for (int h = 0; h < ti.H; h++) {
            const float* r = at(ti, xi, (int)c, h, 0);
            for (int w = 0; w < ti.W; w++) s += r[w];
          }
          zero_ring(to, yo + c * to.plane);
          *at(to, yo, (int)c, 0, 0) = s / (float)(ti.H * ti.W);
          continue;
        }
        float a[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        auto run = [&a](const float* r, int n) {  // n consecutive floats, from lane 0
          int w = 0;
          for (; w + 8 <= n; w += 8)
            for (int k = 0; k < 8; k++) a[k] += r[w + k];
          for (int k = 0; w + k < n; k++) a[k] += r[w + k];
        };
        if (ti.Wp == ti.W) run(at(ti, xi, (int)c, 0, 0), ti.H * ti.W);  // unpadded rows: one run
        else for (int h = 0; h < ti.H; h++) run(at(ti, xi, (int)c, h, 0), ti.W);
        const float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        float* d = yo + c * to.plane;
        zero_ring(to, d);
        *at(to, yo, (int)c, 0, 0) = s / (float)(ti.H * ti.W);
      }
      barrier(par);
    }
  }

  // interleaved input -> per-image outputs. Per lane the same order of adds as the planar loops below (one
  // chain for maps under 256 positions; else 8 running sums, element i of a run into sum i % 8, runs per row
  // when the rows are padded, pairwise at the end): the same bits as the planar layout.
  void gap_il(const Tensor& ti, const Tensor& to, float* A, Op& op, int nb, bool par, int tid, int nth) {
    const int K = ti.il, W = ti.W / K;
    const float* xi = tp(A, (int)op.ip[0], 0);
    int64_t c0, c1; split(ti.C, par ? tid : 0, par ? nth : 1, c0, c1);
    if (c1 <= c0) { barrier(par); return; }
    // the planar plan's run structure (ip[2], from its layout: one run when its rows are unpadded)
    const bool one_run = op.ip.size() > 2 ? op.ip[2] != 0 : (ti.pl == 0 && ti.pr == 0);
    const int mode = ti.H * W < 256 ? 0 : one_run ? 2 : 1;
    std::vector<float> s((size_t)(c1 - c0) * K);  // [channel][lane]
    kt->lane_sums(xi + c0 * ti.plane + (int64_t)ti.pt * ti.Wp + ti.pl, ti.plane, ti.Wp, ti.H, W, mode,
                  (int)(c1 - c0), s.data());
    for (int64_t c = c0; c < c1; c++)
      for (int k = 0; k < nb; k++) {
        float* yo = tp(A, (int)op.ip[1], k);
        zero_ring(to, yo + c * to.plane);
        *at(to, yo, (int)c, 0, 0) = s[(c - c0) * K + k] / (float)(ti.H * W);
      }
    barrier(par);
  }

  // binary ip: out, a_t, b_t (-1 = constant fa[0]/fa[1]), opcode(0 add, 1 mul, 2 sub, 3 div), act,
  //            then per operand (a, b): sc, sh, sw strides (elements, in its own layout incl. padding) and base
  // interleaved output: operands interleaved (same shape), planar per image (broadcast over H and W: one value
  // per channel and image, e.g. a squeeze-excitation gate) or constant; per element the planar arithmetic
  void binary_il(Op& op, float* A, int nb, bool par, int tid, int nth) {
    auto& p = op.ip;
    const Tensor& to = tensors[p[0]];
    const int opc = (int)p[3], act = (int)p[4], K = to.il, W = to.W / K;
    int64_t c0, c1; split(to.C, par ? tid : 0, par ? nth : 1, c0, c1);
    float buf[2][64], hoist[2][64];
    // operand j (0: a, 1: b): lane values of element (c, h, w) into v
    auto fetch = [&](int j, int64_t c, int h, int w, float* v) {
      const int64_t t = p[1 + j], sc = p[5 + 4 * j], sh = p[6 + 4 * j], sw = p[7 + 4 * j], off = p[8 + 4 * j];
      if (t < 0) { const float x = op.fa[j].p[c * sc + h * sh + w * sw]; for (int k = 0; k < K; k++) v[k] = x; return; }
      for (int k = 0; k < K; k++) v[k] = k < nb ? tp(A, (int)t, k)[off + c * sc + h * sh + w * sw] : 0.f;
    };
    bool il_op[2], per_c[2];
    for (int j = 0; j < 2; j++) {
      il_op[j] = p[1 + j] >= 0 && tensors[p[1 + j]].il;
      per_c[j] = !il_op[j] && p[6 + 4 * j] == 0 && p[7 + 4 * j] == 0;  // one value per channel (and image)
    }
    float* yo = tp(A, (int)p[0], 0);
    for (int64_t c = c0; c < c1; c++) {
      for (int j = 0; j < 2; j++) if (per_c[j]) fetch(j, c, 0, 0, hoist[j]);
      for (int h = 0; h < to.H; h++) {
        float* yr = at(to, yo, (int)c, h, 0);
        for (int w = 0; w < W; w++) {
          const float* v[2];
          for (int j = 0; j < 2; j++) {
            if (per_c[j]) v[j] = hoist[j];
            else if (il_op[j]) v[j] = tp(A, (int)p[1 + j], 0) + p[8 + 4 * j] + c * p[5 + 4 * j] + h * p[6 + 4 * j] + (int64_t)w * K;
            else { fetch(j, c, h, w, buf[j]); v[j] = buf[j]; }
          }
          const float* x = v[0];
          const float* z = v[1];
          float* y = yr + (int64_t)w * K;
          switch (opc) {
            case 0: for (int k = 0; k < K; k++) y[k] = x[k] + z[k]; break;
            case 1: for (int k = 0; k < K; k++) y[k] = x[k] * z[k]; break;
            case 2: for (int k = 0; k < K; k++) y[k] = x[k] - z[k]; break;
            default: for (int k = 0; k < K; k++) y[k] = x[k] / z[k];
          }
          if (act != ACT_NONE) for (int k = 0; k < K; k++) y[k] = act_scalar(y[k], act, op.fp[0], op.fp[1]);
        }
      }
      zero_ring(to, yo + c * to.plane);
    }
    barrier(par);
  }

  void exec_binary(Op& op, float* A, int nb, bool par, int tid, int nth) {
    auto& p = op.ip;
    const Tensor& to = tensors[p[0]];
    if (to.il) { binary_il(op, A, nb, par, tid, nth); return; }
    const int opc = (int)p[3], act = (int)p[4];
    for (int img = 0; img < nb; img++) {
      float* yo = tp(A, (int)p[0], img);
      const float* ab = p[1] >= 0 ? tp(A, (int)p[1], img) : op.fa[0].p;
      const float* bb = p[2] >= 0 ? tp(A, (int)p[2], img) : op.fa[1].p;
      const int64_t asc = p[5], ash = p[6], asw = p[7], aoff = p[8];
      const int64_t bsc = p[9], bsh = p[10], bsw = p[11], boff = p[12];
      int64_t c0, c1; split(to.C, par ? tid : 0, par ? nth : 1, c0, c1);
      // channel-broadcast scale / shift whose full operand has the output's row stride: one flat run per
      // channel over rows 0..H-1 (pad columns between the rows included; the output's are rezeroed after),
      // instead of H short rows (efficientnet_b0's squeeze-excitation Mul on 6x6 maps: H calls of 6 floats)
      // (the broadcast operand must be one value per channel: no H stride either, e.g. not shape (C, H, 1))
      const bool bcb = asw == 1 && bsw == 0 && bsh == 0 && ash == to.Wp;
      const bool bca = asw == 0 && ash == 0 && bsw == 1 && bsh == to.Wp;
      const bool flat_bc = act == ACT_NONE && (opc == 0 || opc == 1) && (bcb || bca) && to.H > 1;
      // channel-broadcast scale / shift with unit column strides (either operand order: torchvision's SE
      // block is Mul(scale, x); add and mul commute exactly): every channel of the range in one ISA kernel
      // call, as one flat run per channel when the rows line up (flat_bc) or row by row, then the rings
      const bool rows_bc = act == ACT_NONE && (opc == 0 || opc == 1) &&
                           ((asw == 1 && bsw == 0 && bsh == 0) || (asw == 0 && ash == 0 && bsw == 1));
      if (rows_bc && c1 > c0) {
        const bool xa = asw == 1;  // operand a is the full tensor
        const float* x0 = xa ? ab + aoff + c0 * asc : bb + boff + c0 * bsc;
        const float* g0 = xa ? bb + boff + c0 * bsc : ab + aoff + c0 * asc;
        const int64_t xc = xa ? asc : bsc, gc = xa ? bsc : asc, xr = xa ? ash : bsh;
        if (flat_bc)
          kt->chan_bcast(x0, xc, 0, g0, gc, at(to, yo, (int)c0, 0, 0), to.plane, 0,
                         (int64_t)(to.H - 1) * to.Wp + to.W, 1, c1 - c0, opc == 1);
        else
          kt->chan_bcast(x0, xc, xr, g0, gc, at(to, yo, (int)c0, 0, 0), to.plane, to.Wp, to.W, to.H, c1 - c0,
                         opc == 1);
        if (to.pt || to.pb || to.pl || to.pr)
          for (int64_t c = c0; c < c1; c++) zero_ring(to, yo + c * to.plane);
      }
      for (int64_t c = c0; c < c1 && !rows_bc; c++) {
        for (int h = 0; h < to.H; h++) {
          float* yr = at(to, yo, (int)c, h, 0);
          const float* ar = ab + aoff + c * asc + h * ash;
          const float* br = bb + boff + c * bsc + h * bsh;
          // channel-broadcast scale / shift (squeeze-excitation gate, per-channel bias): a vectorizable row;
          // either operand order (torchvision's SE block is Mul(scale, x)): add and mul commute exactly
          const bool bc_b = asw == 1 && bsw == 0, bc_a = asw == 0 && bsw == 1;
          if (act == ACT_NONE && (bc_a || bc_b) && (opc == 1 || opc == 0)) {
            const float* row = bc_b ? ar : br;
            const float y = bc_b ? br[0] : ar[0];
            if (opc == 1) for (int w = 0; w < to.W; w++) yr[w] = row[w] * y;
            else for (int w = 0; w < to.W; w++) yr[w] = row[w] + y;
            continue;
          }
          if (act == ACT_NONE && asw == 1 && bsw == 1 && opc == 0) {  // same-shape add
            for (int w = 0; w < to.W; w++) yr[w] = ar[w] + br[w];
            continue;
          }
          for (int w = 0; w < to.W; w++) {
            float x = ar[w * asw], y = br[w * bsw], v;
            switch (opc) { case 0: v = x + y; break; case 1: v = x * y; break; case 2: v = x - y; break; default: v = x / y; }
            yr[w] = act_scalar(v, act, op.fp[0], op.fp[1]);
          }
        }
        zero_ring(to, yo + c * to.plane);
      }
      barrier(par);
    }
  }

  // affine ip: in, out, act ; fa: scale[C], shift[C]
  void exec_affine(Op& op, float* A, int nb, bool par, int tid, int nth) {
    const Tensor& ti = tensors[op.ip[0]];
    const Tensor& to = tensors[op.ip[1]];
    const int act = (int)op.ip[2];
    if (ti.il) {  // interleaved in and out: the same per-element arithmetic over the lanes
      const int K = ti.il, W = ti.W / K;
      const float* xi = tp(A, (int)op.ip[0], 0);
      float* yo = tp(A, (int)op.ip[1], 0);
      int64_t c0, c1; split(ti.C, par ? tid : 0, par ? nth : 1, c0, c1);
      for (int64_t c = c0; c < c1; c++) {
        const float s = op.fa[0].p[c], t = op.fa[1].p[c];
        for (int h = 0; h < ti.H; h++) {
          const float* r = at(ti, const_cast<float*>(xi), (int)c, h, 0);
          float* d = at(to, yo, (int)c, h, 0);
          for (int64_t i = 0; i < (int64_t)W * K; i++) d[i] = act_scalar(r[i] * s + t, act, op.fp[0], op.fp[1]);
        }
        zero_ring(to, yo + c * to.plane);
      }
      barrier(par);
      return;
    }
    for (int img = 0; img < nb; img++) {
      float* xi = tp(A, (int)op.ip[0], img);
      float* yo = tp(A, (int)op.ip[1], img);
      int64_t c0, c1; split(ti.C, par ? tid : 0, par ? nth : 1, c0, c1);
      for (int64_t c = c0; c < c1; c++) {
        const float s = op.fa[0].p[c], t = op.fa[1].p[c];
        for (int h = 0; h < ti.H; h++) {
          const float* r = at(ti, xi, (int)c, h, 0);
          float* d = at(to, yo, (int)c, h, 0);
          for (int w = 0; w < ti.W; w++) d[w] = act_scalar(r[w] * s + t, act, op.fp[0], op.fp[1]);
        }
        zero_ring(to, yo + c * to.plane);
      }
      barrier(par);
    }
  }

  // concat ip: out, n, inputs...
  void exec_concat(Op& op, float* A, int nb, bool par, int tid, int nth) {
    const Tensor& to = tensors[op.ip[0]];
    const int n = (int)op.ip[1];
    for (int img = 0; img < nb; img++) {
      float* yo = tp(A, (int)op.ip[0], img);
      int64_t c0, c1; split(to.C, par ? tid : 0, par ? nth : 1, c0, c1);
      int base = 0;
      for (int k = 0; k < n; k++) {
        const Tensor& ti = tensors[op.ip[2 + k]];
        float* xi = tp(A, (int)op.ip[2 + k], img);
        for (int c = 0; c < ti.C; c++) {
          int oc = base + c;
          if (oc < c0 || oc >= c1) continue;
          for (int h = 0; h < ti.H; h++) copy_row(at(to, yo, oc, h, 0), at(ti, xi, c, h, 0), ti.W);
          zero_ring(to, yo + oc * to.plane);
        }
        base += ti.C;
      }
      barrier(par);
    }
  }

  // a row of n floats: a plain loop for short rows (a libc call per 3- to 12-float row of a small map costs
  // more than the copy)
  static inline void copy_row(float* d, const float* s, int64_t n) {
    if (n >= 32) { std::memcpy(d, s, sizeof(float) * n); return; }
    for (int64_t i = 0; i < n; i++) d[i] = s[i];
  }

  void copy_interior(const Tensor& ti, const float* xi, float* d) {  // -> compact C*H*W
    for (int c = 0; c < ti.C; c++)
      for (int h = 0; h < ti.H; h++) {
        copy_row(d, at(ti, const_cast<float*>(xi), c, h, 0), ti.W);
        d += ti.W;
      }
  }

  void exec_flatten(Op& op, float* A, int nb, bool par, int tid) {
    if (par && tid != 0) { barrier(par); return; }
    const Tensor& ti = tensors[op.ip[0]];
    if (ti.il) {  // interleaved -> per image (C, H, W) in order
      const int K = ti.il, W = ti.W / K;
      const float* xi = tp(A, (int)op.ip[0], 0);
      for (int img = 0; img < nb; img++) {
        float* d = tp(A, (int)op.ip[1], img);
        for (int c = 0; c < ti.C; c++)
          for (int h = 0; h < ti.H; h++) {
            const float* r = xi + c * ti.plane + (int64_t)(h + ti.pt) * ti.Wp + ti.pl + img;
            for (int w = 0; w < W; w++) *d++ = r[(int64_t)w * K];
          }
      }
      barrier(par);
      return;
    }
    for (int img = 0; img < nb; img++) copy_interior(ti, tp(A, (int)op.ip[0], img), tp(A, (int)op.ip[1], img));
    barrier(par);
  }

  void exec_op(Op& op, float* A, float* priv, int nb, bool par, int tid, int nth) {
    switch (op.kind) {
      case OP_CONV: exec_conv(op, A, priv, nb, par, tid, nth); break;
      case OP_FC: exec_fc(op, A, nb, par, tid, nth); break;
      case OP_MAXPOOL: case OP_AVGPOOL: exec_pool(op, A, nb, par, tid, nth); break;
      case OP_GAP: exec_gap(op, A, nb, par, tid, nth); break;
      case OP_BINARY: exec_binary(op, A, nb, par, tid, nth); break;
      case OP_AFFINE: exec_affine(op, A, nb, par, tid, nth); break;
      case OP_CONCAT: exec_concat(op, A, nb, par, tid, nth); break;
      case OP_FLATTEN: exec_flatten(op, A, nb, par, tid); break;
    }
  }

  // one chunk of <= bc images: input copy, every op, output copy
  void exec_chunk(const float* x, float* y, int nb, float* A, float* priv, bool par, int tid, int nth) {
    FlushDenormals fd;
    const Tensor& ti = tensors[input_t];
    const int64_t isz = ti.sample();
    if ((!par || tid == 0) && ti.il) {  // interleave: lane k of position (c, h, w) = image k (zero past nb)
      const int W = ti.W / ti.il;  // ti.il == kt->vw (checked at load)
      float* d = tp(A, input_t, 0);
      for (int c = 0; c < ti.C; c++) {
        kt->interleave(x + (int64_t)c * ti.H * W, isz, nb, ti.H, W, d + c * ti.plane + (int64_t)ti.pt * ti.Wp + ti.pl,
                       ti.Wp);
        zero_ring(ti, d + c * ti.plane);
      }
    } else if (!par || tid == 0) {
      for (int img = 0; img < nb; img++) {
        float* d = tp(A, input_t, img);
        const float* s = x + img * isz;
        for (int c = 0; c < ti.C; c++) {
          for (int h = 0; h < ti.H; h++) copy_row(at(ti, d, c, h, 0), s + ((int64_t)c * ti.H + h) * ti.W, ti.W);
          zero_ring(ti, d + c * ti.plane);
        }
      }
    }
    barrier(par);
    const bool prof = profiling && (!par || tid == 0) && tid < (int)prof_us.size();
    for (size_t i = 0; i < ops.size(); i++) {
      if (!par && ops[i].chain_len >= 2) {  // (one thread per chunk: no barriers per row)
        exec_row_chain(i, ops[i].chain_len, A, priv, prof ? &prof_us[tid] : nullptr);
        i += ops[i].chain_len - 1;
        continue;
      }
      if (!prof) { exec_op(ops[i], A, priv, nb, par, tid, nth); continue; }
      auto t0 = std::chrono::steady_clock::now();
      exec_op(ops[i], A, priv, nb, par, tid, nth);
      prof_us[tid][i] += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    }
    if (!par || tid == 0) {
      const Tensor& to = tensors[output_t];
      const int64_t osz = to.sample();
      for (int img = 0; img < nb; img++) copy_interior(to, tp(A, output_t, img), y + img * osz);
    }
    barrier(par);
  }

  void run_ptr(const float* x, float* y, int n, int threads) {
    if (!chains_known) choose_row_chains();
    const Tensor& ti = tensors[input_t];
    const Tensor& to = tensors[output_t];
    const int64_t isz = ti.sample(), osz = to.sample();
    const int nchunks = (n + bc - 1) / bc;
    threads = std::max(1, threads);
    ensure_arenas(threads);
    auto chunk_n = [&](int k) { return std::min(bc, n - k * bc); };
    if (threads == 1) {
      for (int k = 0; k < nchunks; k++)
        exec_chunk(x + k * bc * isz, y + k * bc * osz, chunk_n(k), arenas[0].p, arenas[0].p + arena_floats, false, 0, 1);
      return;
    }
    if (nchunks >= 2) {  // image-parallel: whole chunks, each worker slot in its own arena
      if (!pool) pool.reset(new Pool());
      pool->run(nchunks, threads, [&](int k, int slot) {
        exec_chunk(x + k * bc * isz, y + k * bc * osz, chunk_n(k), arenas[slot].p, arenas[slot].p + arena_floats, false, slot, threads);
      });
      return;
    }
#ifdef _OPENMP
    if (work_macs * std::min(n, bc) < par_min_macs) {  // the chunk's work (the interleaved plan: bc images)
      for (int k = 0; k < nchunks; k++)
        exec_chunk(x + k * bc * isz, y + k * bc * osz, chunk_n(k), arenas[0].p, arenas[0].p + arena_floats, false, 0, 1);
    } else {  // channel-parallel: the team shares arena 0, private scratch per thread
#pragma omp parallel num_threads(threads)
      {
        int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        for (int k = 0; k < nchunks; k++)
          exec_chunk(x + k * bc * isz, y + k * bc * osz, chunk_n(k), arenas[0].p, arenas[tid].p + arena_floats, nth > 1, tid, nth);
      }
    }
#else
    for (int k = 0; k < nchunks; k++)
      exec_chunk(x + k * bc * isz, y + k * bc * osz, chunk_n(k), arenas[0].p, arenas[0].p + arena_floats, false, 0, 1);
#endif
  }

  py::array_t<float> run(py::array_t<float, py::array::c_style | py::array::forcecast> x, int threads) {
    const Tensor& ti = tensors[input_t];
    const Tensor& to = tensors[output_t];
    const int64_t isz = ti.sample(), osz = to.sample();
    if (x.size() % isz) throw std::invalid_argument("input size is not a multiple of the per-sample size");
    int n = (int)(x.size() / isz);
    py::array_t<float> y({(py::ssize_t)n, (py::ssize_t)osz});
    const float* xp = x.data();
    float* yp = y.mutable_data();
    {
      py::gil_scoped_release rel;
      run_ptr(xp, yp, n, threads);
    }
    return y;
  }

  // time one op (one variant) in isolation on arena 0: mean microseconds per call, best of `rounds`
  double time_op(int i, int variant, int nb, int reps, int rounds) {
    ensure_arenas(1);
    Op& op = ops.at(i);
    check_variant(op, variant);
    int saved = op.variant; op.variant = variant;
    float* A = arenas[0].p; float* priv = A + arena_floats;
    // a conv that stores its output over its residual (planner._writes_over_residual) computes y += conv(x)
    // when repeated: keep the arena as it was, or the drifting values (and those of every op fed from them)
    // slow the ops timed after it (efficientnet_b0's 1x1 convs timed 5x slower, and lost to dense)
    std::vector<float> keep;
    if (op.kind == OP_CONV && op.ip[C_RES] >= 0 && tensors[op.ip[C_RES]].off == tensors[op.ip[C_OUT]].off)
      keep.assign(A, A + arena_floats);
    FlushDenormals fd;  // as exec_chunk
    exec_op(op, A, priv, nb, false, 0, 1);  // warm-up
    double best = 1e30;
    for (int r = 0; r < rounds; r++) {
      auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < reps; k++) exec_op(op, A, priv, nb, false, 0, 1);
      auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double, std::micro>(t1 - t0).count() / reps);
    }
    op.variant = saved;
    if (!keep.empty()) std::copy(keep.begin(), keep.end(), A);
    return best;
  }

  size_t weight_bytes() const {
    size_t s = 0;
    for (auto& op : ops) {
      for (auto& b : op.fa) s += b.n * 4;
      for (auto& b : op.ua) s += b.n * 4;
      s += op.fcp.n * 4;
    }
    return s;
  }
  size_t arena_bytes() const { return arenas.size() * (size_t)(arena_floats + private_floats + 1024) * 4; }
};

}  // namespace sk

static std::vector<std::string> isa_list() {
  std::vector<std::string> r;
  for (auto* t : sk::available_tables()) r.push_back(t->name);
  return r;
}

PYBIND11_MODULE(_native, m) {
  m.doc() = "sparse-cpu native kernels (see sparsekit/engine/__init__.py)";
  m.def("available_isas", &isa_list, "ISA variants usable on this CPU, best first");
  // the op and activation codes of add_op / the kernels, defined once here (the planner reads these)
  m.attr("OP_CODES") = py::dict(
      py::arg("conv") = (int)sk::OP_CONV, py::arg("fc") = (int)sk::OP_FC, py::arg("maxpool") = (int)sk::OP_MAXPOOL,
      py::arg("avgpool") = (int)sk::OP_AVGPOOL, py::arg("gap") = (int)sk::OP_GAP, py::arg("binary") = (int)sk::OP_BINARY,
      py::arg("affine") = (int)sk::OP_AFFINE, py::arg("concat") = (int)sk::OP_CONCAT, py::arg("flatten") = (int)sk::OP_FLATTEN);
  m.attr("ACT_CODES") = py::dict(
      py::arg("none") = (int)sk::ACT_NONE, py::arg("Relu") = (int)sk::ACT_RELU, py::arg("Clip") = (int)sk::ACT_CLIP,
      py::arg("LeakyRelu") = (int)sk::ACT_LEAKY, py::arg("Sigmoid") = (int)sk::ACT_SIGMOID,
      py::arg("HardSigmoid") = (int)sk::ACT_HARDSIGMOID, py::arg("HardSwish") = (int)sk::ACT_HARDSWISH,
      py::arg("Silu") = (int)sk::ACT_SILU);
  m.attr("CONV_PARAMS") = (int)sk::C_N;
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  py::class_<sk::Engine>(m, "Engine")
      .def(py::init<const std::string&>())
      .def_property_readonly("isa", [](const sk::Engine& e) { return std::string(e.kt->name); })
      .def_property_readonly("vector_width", [](const sk::Engine& e) { return e.kt->vw; })
      .def_property_readonly("dense_ob", [](const sk::Engine& e) { return e.kt->ob; })
      .def("add_tensor", &sk::Engine::add_tensor)
      .def("add_op", &sk::Engine::add_op)
      .def("set_memory", &sk::Engine::set_memory)
      .def("set_variant", &sk::Engine::set_variant)
      .def("keep_variant", &sk::Engine::keep_variant, py::arg("i"), py::arg("v"), py::arg("also") = -1)
      .def("has_oc", &sk::Engine::has_oc)
      .def_property_readonly("oc_channels", [](const sk::Engine& e) { return 2 * e.kt->vw; })
      .def("run", &sk::Engine::run, py::arg("x"), py::arg("threads") = 1)
      .def("time_op", &sk::Engine::time_op)
      .def("set_sparse_isa", &sk::Engine::set_sparse_isa)
      .def("sparse_isa", [](const sk::Engine& e, int i) { return std::string(e.sparse_table(e.ops.at(i))->name); })
      .def("set_batched", &sk::Engine::set_batched)
      .def("set_il_blocks", [](sk::Engine& e, int i, bool on) { e.ops.at(i).il_blocks = on; })
      .def("set_row_chains", [](sk::Engine& e, bool on) { e.row_chains = on; e.chains_known = false; })
      .def("row_chains", [](sk::Engine& e) {  // [first op, op count] of each row-wavefront chain
        if (!e.chains_known) e.choose_row_chains();
        std::vector<std::pair<int, int>> v;
        for (size_t i = 0; i < e.ops.size(); i++) if (e.ops[i].chain_len >= 2) v.emplace_back((int)i, e.ops[i].chain_len);
        return v;
      })
      .def("has_il_blocks", [](const sk::Engine& e, int i) {
        const sk::Op& op = e.ops.at(i);
        return op.ua.size() > 3 && (int64_t)op.ua[3].n > 2 * op.ip[sk::C_O];
      })
      .def("set_work", [](sk::Engine& e, int64_t macs, int64_t par_min) { e.work_macs = macs; e.par_min_macs = par_min; })
      .def("set_profiling", [](sk::Engine& e, bool on, int threads) {
        e.profiling = on;
        e.prof_us.assign(std::max(1, threads), std::vector<double>(e.ops.size(), 0.0));
      }, py::arg("on"), py::arg("threads") = 1)
      .def("profile", [](const sk::Engine& e) {  // per op: microseconds summed over worker slots
        std::vector<double> s(e.ops.size(), 0.0);
        for (auto& v : e.prof_us) for (size_t i = 0; i < v.size() && i < s.size(); i++) s[i] += v[i];
        return s;
      })
      .def("weight_bytes", &sk::Engine::weight_bytes)
      .def("arena_bytes", &sk::Engine::arena_bytes);
}
