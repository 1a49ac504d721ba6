// ANN benchmark on Fashion-MNIST (Debian dataset-fashion-mnist): strata's HNSW vs hnswlib
// (Debian libhnswlib-dev, compiled -O3 -march=native), same M and ef_construction, single
// thread, in one process and one run; and strata's IVF-PQ (8-bit and 4-bit fast-scan, exact
// re-ranking) over a sweep of nprobe. FAISS is measured on the same data and ground truth by
// bench_faiss.py; bench/ann/run runs both and plots. Prints build time, memory, QPS and
// recall@10.
//
//   build/bench/ann/bench_ann [--n 60000] [--queries 10000] [--engines hnsw,ivfpq]
//       [--m 16] [--efc 200] [--ef 10,16,24,...] [--reorder 1] [--code-bits 0|4|8]
//       [--nlist 256] [--pq8-m 98] [--pq4-m 196] [--rerank 100] [--nprobe 1,2,4,...]
//       [--gt-cache FILE] [--csv FILE]
//
// strata's graph is renumbered for locality after its build (idx_hnsw_reorder, counted in its
// build time), as the indexer serves every part; --reorder 0 measures it in insertion order.
// CSV: engine,param,recall,qps (param = ef or nprobe).
#include <hnswlib/hnswlib.h>

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "st_distance.h"
#include "idx_hnsw.h"
#include "idx_ivfpq.h"
#include "idx_refine.h"
}

static double now_s()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

static std::vector<float> load_idx3(const char *path, uint32_t &n, uint32_t &dim)
{
    gzFile f = gzopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s (apt-get install dataset-fashion-mnist)\n", path);
        exit(1);
    }
    unsigned char h[16];
    if (gzread(f, h, 16) != 16) {
        fprintf(stderr, "%s: short header\n", path);
        exit(1);
    }
    auto be = [](const unsigned char *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    };
    if (be(h) != 2051) {
        fprintf(stderr, "%s: not an idx3-ubyte file\n", path);
        exit(1);
    }
    n = be(h + 4);
    dim = be(h + 8) * be(h + 12);
    std::vector<unsigned char> raw((size_t)n * dim);
    if (gzread(f, raw.data(), (unsigned)raw.size()) != (int)raw.size()) {
        fprintf(stderr, "%s: short data\n", path);
        exit(1);
    }
    gzclose(f);
    std::vector<float> v(raw.size());
    for (size_t i = 0; i < raw.size(); i++)
        v[i] = raw[i];
    return v;
}

int main(int argc, char **argv)
{
    uint32_t nbase = 60000, nq = 10000, m = 16, efc = 200;
    std::string gt_cache = "/tmp/strata-fmnist-gt.bin", csv;
    std::vector<uint32_t> efs = {10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 200, 256};
    std::vector<uint32_t> nprobes = {1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64};
    uint32_t nlist = 256, pq8_m = 98, pq4_m = 196, rerank = 100;
    std::string refine_modes = "0,1";
    uint32_t rotate = 0;
    std::string engines = "hnsw,ivfpq";
    bool reorder = true;
    int code_bits = 0;
    auto list = [](const char *p) {
        std::vector<uint32_t> v;
        for (char *e; *p; p = e + (*e == ',')) {
            v.push_back((uint32_t)strtoul(p, &e, 10));
            if (e == p)
                break;
        }
        return v;
    };
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--engines")
            engines = argv[i + 1];
        else if (a == "--nlist")
            nlist = (uint32_t)atoi(argv[i + 1]);
        else if (a == "--pq8-m")
            pq8_m = (uint32_t)atoi(argv[i + 1]);
        else if (a == "--pq4-m")
            pq4_m = (uint32_t)atoi(argv[i + 1]);
        else if (a == "--refine") // 0: re-rank every candidate; 1: with re-ranking codes
            refine_modes = argv[i + 1];
        else if (a == "--rotate") // N random reflections of base and queries (distances kept)
            rotate = (uint32_t)atoi(argv[i + 1]);
        else if (a == "--rerank")
            rerank = (uint32_t)atoi(argv[i + 1]);
        else if (a == "--nprobe")
            nprobes = list(argv[i + 1]);
        else if (a == "--n")
            nbase = (uint32_t)atoi(argv[i + 1]);
        else if (a == "--queries")
            nq = (uint32_t)atoi(argv[i + 1]);
        else if (a == "--m")
            m = (uint32_t)atoi(argv[i + 1]);
        else if (a == "--efc")
            efc = (uint32_t)atoi(argv[i + 1]);
        else if (a == "--gt-cache")
            gt_cache = argv[i + 1];
        else if (a == "--csv")
            csv = argv[i + 1];
        else if (a == "--ef")
            efs = list(argv[i + 1]);
        else if (a == "--reorder") /* 0: strata's graph in insertion order (comparisons) */
            reorder = atoi(argv[i + 1]) != 0;
        else if (a == "--code-bits") /* 4 or 8: only those traversal codes (0: the default) */
            code_bits = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    const char *dir = "/usr/share/datasets/fashion-mnist";
    uint32_t n, dim, nqa, dq;
    std::vector<float> base =
        load_idx3((std::string(dir) + "/train-images-idx3-ubyte.gz").c_str(), n, dim);
    std::vector<float> qs =
        load_idx3((std::string(dir) + "/t10k-images-idx3-ubyte.gz").c_str(), nqa, dq);
    nbase = std::min(nbase, n);
    nq = std::min(nq, nqa);
    if (rotate > 0) {
        // Householder reflections x -= 2 <v, x> v (v of unit length, uniform entries from a
        // fixed xorshift): every L2 distance kept, every pixel mixed into every dimension, so
        // the values are no longer the bytes Fashion-MNIST's pixels are (bench_faiss.py
        // --rotate applies the same ones).
        uint64_t st = 0x9e3779b97f4a7c15ull;
        std::vector<double> v(dim);
        for (uint32_t r = 0; r < rotate; r++) {
            double nn = 0;
            for (uint32_t j = 0; j < dim; j++) {
                st ^= st << 13;
                st ^= st >> 7;
                st ^= st << 17;
                v[j] = (double)(st >> 11) / 9007199254740992.0 * 2 - 1;
                nn += v[j] * v[j];
            }
            for (uint32_t j = 0; j < dim; j++)
                v[j] /= std::sqrt(nn);
            for (std::vector<float> *set : {&base, &qs})
                for (size_t i = 0; i < set->size() / dim; i++) {
                    float *x = set->data() + i * dim;
                    double d = 0;
                    for (uint32_t j = 0; j < dim; j++)
                        d += v[j] * x[j];
                    for (uint32_t j = 0; j < dim; j++)
                        x[j] = (float)(x[j] - 2 * d * v[j]);
                }
        }
        gt_cache += ".rot" + std::to_string(rotate);
    }
    const uint32_t K = 10;
    printf("Fashion-MNIST: %u base x %u dims, %u queries, k=%u, M=%u, ef_construction=%u, "
           "kernels=%s, single-threaded search%s\n",
           nbase, dim, nq, K, m, efc, st_kernels()->name,
           reorder ? "" : ", strata's nodes in insertion order (--reorder 0)");

    // Exact ground truth with our scan (cached: it is the slow part).
    std::vector<uint32_t> gt((size_t)nq * K);
    char cache_name[600];
    snprintf(cache_name, sizeof(cache_name), "%s.%u.%u", gt_cache.c_str(), nbase, nq);
    FILE *cf = fopen(cache_name, "rb");
    if (!cf || fread(gt.data(), sizeof(uint32_t), gt.size(), cf) != gt.size()) {
        if (cf)
            fclose(cf);
        double t0 = now_s();
        unsigned nt = std::max(1u, std::thread::hardware_concurrency());
        std::vector<std::thread> th;
        for (unsigned t = 0; t < nt; t++)
            th.emplace_back([&, t] {
                std::vector<st_hit> hits(K);
                for (uint32_t q = t; q < nq; q += nt) {
                    st_exact_topk(&qs[(size_t)q * dim], base.data(), nbase, dim, ST_METRIC_L2, K,
                                  nullptr, nullptr, hits.data());
                    for (uint32_t j = 0; j < K; j++)
                        gt[(size_t)q * K + j] = hits[j].id;
                }
            });
        for (auto &x : th)
            x.join();
        printf("ground truth: exact scan in %.1f s (cached in %s)\n", now_s() - t0, cache_name);
        cf = fopen(cache_name, "wb");
        if (cf) {
            fwrite(gt.data(), sizeof(uint32_t), gt.size(), cf);
            fclose(cf);
        }
    } else {
        fclose(cf);
    }

    auto recall = [&](const std::vector<uint32_t> &res) {
        size_t hit = 0;
        for (uint32_t q = 0; q < nq; q++)
            for (uint32_t j = 0; j < K; j++)
                for (uint32_t g = 0; g < K; g++)
                    if (res[(size_t)q * K + j] == gt[(size_t)q * K + g]) {
                        hit++;
                        break;
                    }
        return (double)hit / ((double)nq * K);
    };

    FILE *out = csv.empty() ? nullptr : fopen(csv.c_str(), "w");
    if (out)
        fprintf(out, "engine,param,recall,qps\n");
    std::vector<uint32_t> res((size_t)nq * K);
    if (engines.find("hnsw") != std::string::npos) {
        // Build both, single-threaded.
        double t0 = now_s();
        idx_hnsw_opts o = {};
        o.dim = dim;
        o.metric = ST_METRIC_L2;
        o.m = m;
        o.ef_construction = efc;
        o.seed = 42;
        o.threads = 1;
        idx_hnsw *ours = nullptr;
        if (idx_hnsw_build(&o, base.data(), nbase, &ours) != ST_OK) {
            fprintf(stderr, "idx_hnsw_build failed\n");
            return 1;
        }
        /* As the indexer serves a part (idx_part.c): nodes renumbered for locality. */
        if (reorder && idx_hnsw_reorder(ours) != ST_OK) {
            fprintf(stderr, "idx_hnsw_reorder failed\n");
            return 1;
        }
        double ours_build = now_s() - t0;
        if (code_bits != 0 && idx_hnsw_make_codes_bits(ours, code_bits) != ST_OK) {
            fprintf(stderr, "idx_hnsw_make_codes_bits failed\n");
            return 1;
        }
        t0 = now_s();
        hnswlib::L2Space space(dim);
        hnswlib::HierarchicalNSW<float> ref(&space, nbase, m, efc, 42);
        for (uint32_t i = 0; i < nbase; i++)
            ref.addPoint(&base[(size_t)i * dim], i);
        double ref_build = now_s() - t0;
        size_t ref_mem =
            (size_t)nbase * ref.size_data_per_element_ + (size_t)nbase * sizeof(void *);
        for (uint32_t i = 0; i < nbase; i++)
            ref_mem += ref.element_levels_[i] * ref.size_links_per_element_;
        printf("build (1 thread): strata %.1f s, hnswlib %.1f s (ratio %.2f)\n", ours_build,
               ref_build, ref_build / ours_build);
        printf("index memory: strata %.1f MiB, hnswlib %.1f MiB\n",
               idx_hnsw_memory(ours) / 1048576.0, ref_mem / 1048576.0);
        printf("strata traversal codes: %d-bit%s\n", idx_hnsw_code_bits(ours),
               code_bits != 0 ? " (--code-bits)" : " (the self-check's choice)");

        // Two strata searchers over the same graph: traversal on 4- or 8-bit codes with exact
        // re-ranking (the default) and traversal on the float32 vectors. The first also runs
        // every query in one batched call (idx_hnsw_search_batch: queries in lock step).
        idx_hnsw_searcher *s = idx_hnsw_searcher_new(ours), *s32 = idx_hnsw_searcher_new(ours);
        idx_hnsw_searcher_use_codes(s32, false);
        std::vector<st_hit> hits(K);
        auto run_ours = [&](idx_hnsw_searcher *srch, uint32_t ef) {
            double a = now_s();
            for (uint32_t q = 0; q < nq; q++) {
                size_t got = idx_hnsw_search(srch, &qs[(size_t)q * dim], K, ef, nullptr, nullptr,
                                             hits.data());
                for (uint32_t j = 0; j < K; j++)
                    res[(size_t)q * K + j] = j < got ? hits[j].id : UINT32_MAX;
            }
            return now_s() - a;
        };
        std::vector<st_hit> bhits((size_t)nq * K);
        std::vector<size_t> bcounts(nq);
        auto run_batch = [&](idx_hnsw_searcher *srch, uint32_t ef) {
            double a = now_s();
            if (idx_hnsw_search_batch(srch, qs.data(), nq, K, ef, nullptr, nullptr, bhits.data(),
                                      bcounts.data()) != ST_OK) {
                fprintf(stderr, "idx_hnsw_search_batch failed\n");
                exit(1);
            }
            double t = now_s() - a;
            for (uint32_t q = 0; q < nq; q++)
                for (uint32_t j = 0; j < K; j++)
                    res[(size_t)q * K + j] =
                        j < bcounts[q] ? bhits[(size_t)q * K + j].id : UINT32_MAX;
            return t;
        };
        printf("%6s | %-22s | %-22s | %-22s | %-22s | %s\n", "ef", "strata recall / QPS",
               "strata batch recall / QPS", "strata f32 recall / QPS", "hnswlib recall / QPS",
               "QPS ratio (batch, f32 ratios)");
        for (uint32_t ef : efs) {
            // Alternate the engines, best of 3 passes each, to even out machine noise.
            double best_batch = 1e30, r_batch = 0;
            double best_ours = 1e30, best_f32 = 1e30, best_ref = 1e30, r_ours = 0, r_f32 = 0,
                   r_ref = 0;
            for (int pass = 0; pass < 3; pass++) {
                best_ours = std::min(best_ours, run_ours(s, ef));
                r_ours = recall(res);
                best_batch = std::min(best_batch, run_batch(s, ef));
                r_batch = recall(res);
                best_f32 = std::min(best_f32, run_ours(s32, ef));
                r_f32 = recall(res);
                ref.setEf(ef);
                double a = now_s();
                for (uint32_t q = 0; q < nq; q++) {
                    auto pq = ref.searchKnn(&qs[(size_t)q * dim], K);
                    for (int j = (int)K - 1; j >= 0; j--) {
                        res[(size_t)q * K + j] =
                            pq.empty() ? UINT32_MAX : (uint32_t)pq.top().second;
                        if (!pq.empty())
                            pq.pop();
                    }
                }
                best_ref = std::min(best_ref, now_s() - a);
                r_ref = recall(res);
            }
            double qo = nq / best_ours, q32 = nq / best_f32, qr = nq / best_ref,
                   qb = nq / best_batch;
            printf(
                "%6u | %.4f  %10.0f     | %.4f  %10.0f     | %.4f  %10.0f     | %.4f  %10.0f     "
                "| %.2f (%.2f, %.2f)\n",
                ef, r_ours, qo, r_batch, qb, r_f32, q32, r_ref, qr, qo / qr, qb / qr, q32 / qr);
            if (out) {
                fprintf(out, "strata-hnsw,%u,%.5f,%.1f\n", ef, r_ours, qo);
                fprintf(out, "strata-hnsw-batch,%u,%.5f,%.1f\n", ef, r_batch, qb);
                fprintf(out, "strata-hnsw-f32,%u,%.5f,%.1f\n", ef, r_f32, q32);
                fprintf(out, "hnswlib,%u,%.5f,%.1f\n", ef, r_ref, qr);
            }
            fflush(stdout);
        }
        idx_hnsw_searcher_free(s32);
        idx_hnsw_searcher_free(s);
        idx_hnsw_free(ours);
    }

    if (engines.find("ivfpq") != std::string::npos) {
        // IVF-PQ, 8-bit and 4-bit fast-scan, same nlist, exact re-ranking of `rerank`
        // candidates from the raw vectors (FAISS: IndexRefineFlat with k_factor = rerank / k).
        // With --refine 1 (the "-rc" rows) the re-rank goes through the raw vectors' one-byte
        // re-ranking codes (idx_refine.h): the same hits from fewer raw rows.
        idx_refine *rc = nullptr;
        if (refine_modes.find('1') != std::string::npos) {
            double t0 = now_s();
            if (idx_refine_build(base.data(), nbase, dim, ST_METRIC_L2, &rc) != ST_OK) {
                fprintf(stderr, "idx_refine_build failed\n");
                return 1;
            }
            printf("re-ranking codes: built in %.2f s, %.1f MiB\n", now_s() - t0,
                   idx_refine_memory(rc) / 1048576.0);
        }
        for (uint32_t nbits : {8u, 4u}) {
            if ((nbits == 8 ? pq8_m : pq4_m) == 0)
                continue; // --pq8-m 0 / --pq4-m 0: skip that variant
            idx_ivfpq_opts o = {};
            o.dim = dim;
            o.metric = ST_METRIC_L2;
            o.nlist = nlist;
            o.m = nbits == 8 ? pq8_m : pq4_m;
            o.nbits = nbits;
            o.seed = 42;
            o.threads = 1;
            double t0 = now_s();
            idx_ivfpq *ix = nullptr;
            if (idx_ivfpq_build(&o, base.data(), nbase, &ix) != ST_OK) {
                fprintf(stderr, "idx_ivfpq_build failed\n");
                return 1;
            }
            char name[64];
            snprintf(name, sizeof(name), "strata-ivf%u-pq%ux%u", nlist, o.m, nbits);
            printf("%s: build (1 thread) %.1f s, index memory %.1f MiB (+ raw vectors for "
                   "re-ranking), rerank %u\n",
                   name, now_s() - t0, idx_ivfpq_memory(ix) / 1048576.0, rerank);
            // One query per call (as the search endpoint serves them) and the whole query set
            // in one idx_ivfpq_search_batch call (as bench_faiss.py searches FAISS).
            idx_ivfpq_searcher *s = idx_ivfpq_searcher_new(ix);
            for (int refined = 0; refined < 2; refined++) {
                if (refine_modes.find(refined ? '1' : '0') == std::string::npos)
                    continue;
                if (idx_ivfpq_searcher_refine(s, refined ? rc : nullptr) != ST_OK) {
                    fprintf(stderr, "idx_ivfpq_searcher_refine refused the codes\n");
                    return 1;
                }
                std::string row = std::string(name) + (refined ? "-rc" : "");
                printf("%s\n%8s | %-22s | %s\n", row.c_str(), "nprobe", "recall / QPS",
                       "QPS batched");
                std::vector<st_hit> hits((size_t)K * nq);
                std::vector<size_t> counts(nq);
                for (uint32_t np : nprobes) {
                    double best[2] = {1e30, 1e30}, r[2] = {0, 0};
                    uint64_t exact0 = idx_ivfpq_searcher_exact(s);
                    for (int batched = 0; batched < 2; batched++)
                        for (int pass = 0; pass < 3; pass++) {
                            double a = now_s();
                            if (batched) {
                                if (idx_ivfpq_search_batch(s, qs.data(), nq, K, np, rerank,
                                                           base.data(), nullptr, nullptr,
                                                           hits.data(), counts.data()) != ST_OK) {
                                    fprintf(stderr, "idx_ivfpq_search_batch failed\n");
                                    return 1;
                                }
                            } else {
                                for (uint32_t q = 0; q < nq; q++)
                                    counts[q] = idx_ivfpq_search(s, &qs[(size_t)q * dim], K, np,
                                                                 rerank, base.data(), nullptr,
                                                                 nullptr, &hits[(size_t)q * K]);
                            }
                            best[batched] = std::min(best[batched], now_s() - a);
                            for (uint32_t q = 0; q < nq; q++)
                                for (uint32_t j = 0; j < K; j++)
                                    res[(size_t)q * K + j] =
                                        j < counts[q] ? hits[(size_t)q * K + j].id : UINT32_MAX;
                            r[batched] = recall(res);
                        }
                    printf("%8u | %.4f  %10.0f | %10.0f   (exact distances a query: %.1f)\n", np,
                           r[0], nq / best[0], nq / best[1],
                           (double)(idx_ivfpq_searcher_exact(s) - exact0) / (6.0 * nq));
                    if (r[0] != r[1])
                        printf("         (batched recall %.4f differs)\n", r[1]);
                    if (out) {
                        fprintf(out, "%s-1q,%u,%.5f,%.1f\n", row.c_str(), np, r[0], nq / best[0]);
                        fprintf(out, "%s,%u,%.5f,%.1f\n", row.c_str(), np, r[1], nq / best[1]);
                    }
                    fflush(stdout);
                }
            }
            idx_ivfpq_searcher_free(s);
            idx_ivfpq_free(ix);
        }
        idx_refine_free(rc);
    }
    if (out)
        fclose(out);
    return 0;
}
