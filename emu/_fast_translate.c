/*
 * The compiled twin of Cpu._build_translate's closure (emu/cpu.py): the translation of
 * one access through this CPU's TLB model, for the cases that make up nearly every
 * Unicorn TLB miss.
 *
 * It works on the Python model's own objects (the dict sets whose insertion order is the
 * LRU order, the Translation entries, the per-ASID index `by_tag`, the size counts, the
 * TLBStats), with the same effects in the same order as the Python. Every case it does
 * not handle is handed to the Python closure before anything is changed (a tagged VA, a
 * trace being recorded, a TLB holding blocks, a VA whose keys need more than 64 bits);
 * the rarer steps after a change are done by calling the same Python the closure calls
 * (SetAssocTLB.insert on an L2 hit, Cpu._account for a walk that faults, Cpu._walk for a
 * cold walk, the checker, SetAssocTLB._dropped for an evicted block).
 *
 * FillHook, at the end, is the compiled twin of Cpu._build_fill_hook's `fill`: Unicorn's
 * UC_HOOK_TLB_FILL callback itself (registered with uc_hook_add, no ctypes in between),
 * answering a miss through the Translator.
 *
 * Read it next to the Python: each block names the lines it mirrors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_fast_slots.h"
#include <stdbool.h>
#include <stdint.h>

/* ---------------------------------------------------------------- names, interned once */
static PyObject *S_regime, *S__tbi, *S_asid, *S_epd, *S_pa_bits, *S_wxn, *S_shifts, *S_cycles,
    *S_trace, *S_checker, *S_stale_use, *S_insert, *S__uc_stale, *S__uc_flush, *S_walks,
    *S_walk_reads, *S_table_pa, *S_tattrs, *S__recent_i, *S_lost, *S_shift_count,
    *S__update_shifts, *S__dropped, *S_randrange, *S_access, *S_el, *S_mem, *S_stale;
static PyObject *three;                /* the level of every entry made here */

/* Slot offsets of Translation's fields (and TLBStats'): read from the member descriptors
 * that dataclass(slots=True) creates, so a store is one pointer write (checked at setup). */
enum { T_VA, T_VA_BASE, T_PA_BASE, T_LEVEL, T_SIZE, T_PERMS, T_NG, T_ASID, T_DESC, T_DESC_PA,
       T_READS, T_TABLES, T_REFS, T_SPECULATIVE, T_FILL_CYCLE, T_STALE, T_NFIELDS };
static const char *translation_fields[T_NFIELDS] = {
    "va", "va_base", "pa_base", "level", "size", "perms", "ng", "asid", "desc", "desc_pa",
    "reads", "tables", "refs", "speculative", "fill_cycle", "stale"};
enum { ST_HITS, ST_MISSES, ST_INSERTS, ST_EVICTIONS, ST_NFIELDS };
static const char *stats_fields[ST_NFIELDS] = {"hits", "misses", "inserts", "evictions"};


/* One TLB structure (SetAssocTLB), as the closure's `parts` tuple: objects that live as
 * long as it (the sets, the per-ASID index, the stats) and its geometry. */
typedef struct {
    PyObject *t;            /* the SetAssocTLB: shifts, shift_count, rng, _dropped, _update_shifts */
    PyObject *sets;         /* list of dicts */
    uint64_t mask;
    Py_ssize_t ways;
    int lru;
    PyObject *stats;        /* TLBStats */
    PyObject *by_tag;       /* ASID tag -> {key: entry} */
} Part;

typedef struct {
    PyObject_HEAD
    PyObject *python;       /* the Python closure: every case not handled here */
    PyObject *cpu, *machine, *tlb;
    PyObject *regime_type, *wce_type;               /* Regime, WalkCacheEntry: slotted */
    Py_ssize_t rg_asid, rg_epd, rg_pa_bits, rg_wxn, we_table_pa, we_tattrs;
    Part itlb, dtlb, l2;
    PyObject *wc_sets, *wc_stats;
    uint64_t wc_mask;
    int wc_lru;
    Py_buffer q;            /* physical memory as 64-bit words */
    Py_ssize_t nwords;
    PyObject *walk_observers, *recent, *holds, *perm_memo, *leaf_perms_cached;
    PyObject *translation_type, *fault_type, *access, *permission, *account, *walk_l3,
        *walk_and_fill, *only_4k;
    long long l1_hit_cycles, l2_hit_cycles, descriptor_read, walk_cache_hit;
    uint64_t oa_mask, page_af, leaf_perm_bits, wxn_key, ng_bit, global_tag, tag_mask;
    int tag_bits;
    Py_ssize_t t_off[T_NFIELDS], st_off[ST_NFIELDS];
} Translator;

/* ---------------------------------------------------------------- small helpers */

/* attribute o.name as a C integer (-1 with an exception on error) */
static int get_ll(PyObject *o, PyObject *name, long long *out)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int set_ll(PyObject *o, PyObject *name, long long value)
{
    PyObject *v = PyLong_FromLongLong(value);
    if (v == NULL)
        return -1;
    int r = PyObject_SetAttr(o, name, v);
    Py_DECREF(v);
    return r;
}

/* o.name += delta */
static int add_ll(PyObject *o, PyObject *name, long long delta)
{
    long long v;
    if (get_ll(o, name, &v) < 0)
        return -1;
    return set_ll(o, name, v + delta);
}



/* store a new reference into a fresh object's slot */
static inline void slot_put(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject *old = SLOT(o, off);
    SLOT(o, off) = v;
    Py_XDECREF(old);
}

static int truth_attr(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* `dict[k]` moved to the most recently used end: `del s[k]; s[k] = e` */
static int lru_touch(PyObject *s, PyObject *k, PyObject *e)
{
    Py_INCREF(e);
    int r = PyDict_DelItem(s, k);
    if (r == 0)
        r = PyDict_SetItem(s, k, e);
    Py_DECREF(e);
    return r;
}

/* The 4 KB lookup of one structure, keys given (mirrors the `shifts is only_4k` branch):
 * the entry (borrowed) and which key matched, or NULL with no error for a miss. */
static PyObject *lookup_4k(PyObject *s, PyObject *ka, PyObject *kg, PyObject **k)
{
    PyObject *e = PyDict_GetItemWithError(s, ka);
    *k = ka;
    if (e == NULL && !PyErr_Occurred()) {
        e = PyDict_GetItemWithError(s, kg);
        *k = kg;
    }
    return e;
}

/* the entry's `stale` mark (a BlockSlice answers for its block, through its property) */
static int entry_stale(Translator *self, PyObject *e)
{
    if (Py_TYPE(e) == (PyTypeObject *)self->translation_type) {
        PyObject *v = SLOT(e, self->t_off[T_STALE]);
        return v == NULL ? -1 : PyObject_IsTrue(v);
    }
    return truth_attr(e, S_stale);
}

/* machine.checker.stale_use(cpu, va, e, Access(acc), el) if the entry is stale and a
 * checker listens (mirrors `if e.stale and machine.checker is not None`) */
static int report_stale(Translator *self, PyObject *e, PyObject *va, int acc, PyObject *el)
{
    int stale = entry_stale(self, e);
    if (stale <= 0)
        return stale;
    PyObject *checker = PyObject_GetAttr(self->machine, S_checker);
    if (checker == NULL)
        return -1;
    int r = 0;
    if (checker != Py_None) {
        PyObject *access = PySequence_GetItem(self->access, acc);
        PyObject *res = access == NULL ? NULL
            : PyObject_CallMethodObjArgs(checker, S_stale_use, self->cpu, va, e, access, el, NULL);
        Py_XDECREF(access);
        r = res == NULL ? -1 : 0;
        Py_XDECREF(res);
    }
    Py_DECREF(checker);
    return r;
}

/* if cpu._uc_stale: cpu._uc_flush() */
static int flush_if_stale(Translator *self)
{
    int stale = truth_attr(self->cpu, S__uc_stale);
    if (stale <= 0)
        return stale;
    PyObject *r = PyObject_CallMethodNoArgs(self->cpu, S__uc_flush);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The permission check and its fault (mirrors the closure's last lines; no trace is being
 * recorded here, or the Python would have run). Steals nothing; returns a new reference. */
static PyObject *checked(Translator *self, PyObject *e, PyObject *va, int acc, long el, PyObject *el_obj)
{
    PyObject *p = SLOT(e, self->t_off[T_PERMS]);
    long perms = p == NULL ? -1 : PyLong_AsLong(p);
    if (perms == -1 && (p == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "perms");
        return NULL;
    }
    if ((perms >> (acc + (el == 0 ? 3 : 0))) & 1) {
        Py_INCREF(e);
        return e;
    }
    PyObject *access = PySequence_GetItem(self->access, acc);
    if (access == NULL)
        return NULL;
    PyObject *f = PyObject_CallFunctionObjArgs(self->fault_type, self->permission, SLOT(e, self->t_off[T_LEVEL]),
                                               va, access, el_obj, NULL);
    Py_DECREF(access);
    return f;
}

/* A walk's result handed back by the Python (Cpu._account or Cpu._walk): a Fault gets the
 * access and EL (mirrors `if e.__class__ is Fault: e.access, e.el = Access(acc), el`). */
static PyObject *walked(Translator *self, PyObject *e, PyObject *va, int acc, long el, PyObject *el_obj)
{
    if (e == NULL)
        return NULL;
    if ((PyObject *)Py_TYPE(e) == self->fault_type) {
        PyObject *access = PySequence_GetItem(self->access, acc);
        if (access == NULL || PyObject_SetAttr(e, S_access, access) < 0 || PyObject_SetAttr(e, S_el, el_obj) < 0) {
            Py_XDECREF(access);
            Py_DECREF(e);
            return NULL;
        }
        Py_DECREF(access);
        return e;
    }
    PyObject *r = checked(self, e, va, acc, el, el_obj);
    Py_DECREF(e);
    return r;
}

/* ---------------------------------------------------------------- the fill of a new 4 KB entry */

/* Mirrors the closure's `for t, sets, mask, ways, lru, stats, by_tag in fills[l1]` body for
 * one structure: evict if the set is full, insert under key k with ASID tag `tag`. */
static int fill_one(Translator *self, Part *p, uint64_t vpn12, PyObject *k, PyObject *tag, PyObject *e)
{
    PyObject *s = PyList_GET_ITEM(p->sets, (Py_ssize_t)(vpn12 & p->mask));
    int counted = 0;                                 /* a same-size eviction keeps shift_count */
    Py_ssize_t n = PyDict_GET_SIZE(s);
    if (n >= p->ways) {
        PyObject *evk = NULL;
        if (p->lru) {
            Py_ssize_t pos = 0;
            PyObject *v;
            PyDict_Next(s, &pos, &evk, &v);          /* the oldest: next(iter(s)) */
            Py_INCREF(evk);
        } else {                                     /* list(s)[t.rng.randrange(len(s))] */
            PyObject *rng = PyObject_GetAttrString(p->t, "rng");
            if (rng == NULL)
                return -1;
            PyObject *r = PyObject_CallMethod(rng, "randrange", "n", n);
            Py_DECREF(rng);
            if (r == NULL)
                return -1;
            Py_ssize_t i = PyLong_AsSsize_t(r);
            Py_DECREF(r);
            if (i == -1 && PyErr_Occurred())
                return -1;
            PyObject *keys = PyDict_Keys(s);
            if (keys == NULL)
                return -1;
            evk = PyList_GetItem(keys, i);
            Py_XINCREF(evk);
            Py_DECREF(keys);
            if (evk == NULL)
                return -1;
        }
        PyObject *ev = PyDict_GetItemWithError(s, evk);   /* ev = s.pop(evk) */
        if (ev == NULL) {
            Py_DECREF(evk);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_KeyError, "evicted key");
            return -1;
        }
        Py_INCREF(ev);
        if (PyDict_DelItem(s, evk) < 0 || fast_slot_add(p->stats, self->st_off[ST_EVICTIONS], 1, NULL) < 0)
            goto ev_fail;
        uint64_t evkv = PyLong_AsUnsignedLongLongMask(evk);   /* only its low bits are read */
        if (evkv == (uint64_t)-1 && PyErr_Occurred())
            goto ev_fail;
        if (((evkv >> self->tag_bits) & 63) == 12 && Py_TYPE(ev) == (PyTypeObject *)self->translation_type) {
            /* NOTE: inlined from SetAssocTLB._dropped, as the closure does: a 4 KB entry out */
            PyObject *evtag = PyLong_FromUnsignedLongLong(evkv & self->tag_mask);
            if (evtag == NULL)
                goto ev_fail;
            PyObject *d = PyDict_GetItemWithError(p->by_tag, evtag);
            if (d == NULL || PyDict_DelItem(d, evk) < 0 || (PyDict_GET_SIZE(d) == 0 && PyDict_DelItem(p->by_tag, evtag) < 0)) {
                if (d == NULL && !PyErr_Occurred())
                    PyErr_SetString(PyExc_KeyError, "by_tag");
                Py_DECREF(evtag);
                goto ev_fail;
            }
            Py_DECREF(evtag);
            long long refs;
            if (fast_slot_add(ev, self->t_off[T_REFS], -1, &refs) < 0)
                goto ev_fail;
            if (refs == 0) {
                /* NOTE: inlined from Cpu._entry_left (every TLB's on_remove) */
                if (PyObject_SetAttr(self->tlb, S_lost, Py_True) < 0)
                    goto ev_fail;
                PyObject *id = PyLong_FromVoidPtr(ev);
                int held = id == NULL ? -1 : PyDict_Contains(self->holds, id);
                Py_XDECREF(id);
                if (held < 0 || (held && PyObject_SetAttr(self->cpu, S__uc_stale, Py_True) < 0))
                    goto ev_fail;
            }
            counted = 1;
        } else {
            PyObject *r = PyObject_CallMethodObjArgs(p->t, S__dropped, evk, ev, NULL);
            if (r == NULL)
                goto ev_fail;
            Py_DECREF(r);
        }
        Py_DECREF(ev);
        Py_DECREF(evk);
        goto insert;
    ev_fail:
        Py_DECREF(ev);
        Py_DECREF(evk);
        return -1;
    }
insert:
    if (PyDict_SetItem(s, k, e) < 0 || fast_slot_add(e, self->t_off[T_REFS], 1, NULL) < 0
        || fast_slot_add(p->stats, self->st_off[ST_INSERTS], 1, NULL) < 0)
        return -1;
    PyObject *d = PyDict_GetItemWithError(p->by_tag, tag);
    if (d == NULL) {
        if (PyErr_Occurred())
            return -1;
        d = PyDict_New();
        if (d == NULL || PyDict_SetItem(p->by_tag, tag, d) < 0) {
            Py_XDECREF(d);
            return -1;
        }
        Py_DECREF(d);                                /* by_tag holds it */
    }
    if (PyDict_SetItem(d, k, e) < 0)
        return -1;
    if (!counted) {
        PyObject *sc = PyObject_GetAttr(p->t, S_shift_count);
        if (sc == NULL)
            return -1;
        PyObject *cur = PyList_GetItem(sc, 12);
        long long c = cur == NULL ? -1 : PyLong_AsLongLong(cur);
        if (c == -1 && PyErr_Occurred()) {
            Py_DECREF(sc);
            return -1;
        }
        PyObject *nv = PyLong_FromLongLong(c + 1);
        int r = nv == NULL ? -1 : PyList_SetItem(sc, 12, nv);      /* steals nv */
        Py_DECREF(sc);
        if (r < 0)
            return -1;
        if (c == 0) {
            PyObject *u = PyObject_CallMethodNoArgs(p->t, S__update_shifts);
            if (u == NULL)
                return -1;
            Py_DECREF(u);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- translate(va, acc, el) */

static PyObject *translate(Translator *self, PyObject *va_obj, int acc, PyObject *el_obj)
{
    PyObject *cpu = self->cpu;
    PyObject *regime = NULL, *ka = NULL, *kg = NULL, *asid_obj = NULL, *result = NULL;

    /* what the Python handles, decided before anything changes */
    uint64_t va = PyLong_AsUnsignedLongLong(va_obj);
    if (va == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto python;
    }
    if (va >> 53)                                    /* its 4 KB key would not fit 64 bits */
        goto python;
    long el = PyLong_AsLong(el_obj);
    if (el == -1 && PyErr_Occurred())
        return NULL;
    int tbi = truth_attr(cpu, S__tbi);
    if (tbi < 0)
        return NULL;
    if (tbi)
        goto python;
    PyObject *trace = PyObject_GetAttr(self->machine, S_trace);
    if (trace == NULL)
        return NULL;
    Py_DECREF(trace);                                /* (compared by identity only) */
    if (trace != Py_None)
        goto python;
    Part *l1 = acc == 2 ? &self->itlb : &self->dtlb;
    Part *l2 = &self->l2;
    PyObject *sh1 = PyObject_GetAttr(l1->t, S_shifts), *sh2 = PyObject_GetAttr(l2->t, S_shifts);
    Py_XDECREF(sh1);                                 /* (compared by identity, or empty: the TLBs hold them) */
    Py_XDECREF(sh2);
    if (sh1 == NULL || sh2 == NULL)
        return NULL;
    /* only 4 KB entries held (or none): the closure's `shifts is only_4k` branches */
    int l1_4k = sh1 == self->only_4k, l2_4k = sh2 == self->only_4k;
    if ((!l1_4k && PyTuple_GET_SIZE(sh1)) || (!l2_4k && PyTuple_GET_SIZE(sh2)))
        goto python;

    regime = PyObject_GetAttr(cpu, S_regime);
    if (regime == NULL)
        return NULL;
    if ((PyObject *)Py_TYPE(regime) != self->regime_type) {
        Py_DECREF(regime);
        goto python;
    }
    asid_obj = SLOT(regime, self->rg_asid);
    if (asid_obj == NULL) {
        PyErr_SetString(PyExc_AttributeError, "asid");
        goto fail;
    }
    Py_INCREF(asid_obj);
    uint64_t asid = PyLong_AsUnsignedLongLong(asid_obj);
    if (asid == (uint64_t)-1 && PyErr_Occurred())
        goto fail;
    uint64_t vpn12 = va >> 12;
    uint64_t key12 = ((vpn12 << 6) | 12) << self->tag_bits;   /* shared by both lookups and the fills */
    ka = PyLong_FromUnsignedLongLong(key12 | asid);
    kg = PyLong_FromUnsignedLongLong(key12 | self->global_tag);
    if (ka == NULL || kg == NULL)
        goto fail;
    long long cycles;
    PyObject *k, *e = NULL;

    /* L1 of the access side (mirrors the first inlined SetAssocTLB.lookup) */
    PyObject *s = PyList_GET_ITEM(l1->sets, (Py_ssize_t)(vpn12 & l1->mask));
    if (l1_4k) {
        e = lookup_4k(s, ka, kg, &k);
        if (e == NULL && PyErr_Occurred())
            goto fail;
        if (e != NULL && l1->lru && lru_touch(s, k, e) < 0)
            goto fail;
    }
    if (e != NULL) {
        Py_INCREF(e);                                /* (a random-replacement set keeps it too) */
        if (fast_slot_add(l1->stats, self->st_off[ST_HITS], 1, NULL) < 0 || add_ll(cpu, S_cycles, self->l1_hit_cycles) < 0
            || report_stale(self, e, va_obj, acc, el_obj) < 0) {
            Py_DECREF(e);
            goto fail;
        }
        result = checked(self, e, va_obj, acc, el, el_obj);
        Py_DECREF(e);
        goto done;
    }
    if (fast_slot_add(l1->stats, self->st_off[ST_MISSES], 1, NULL) < 0)
        goto fail;

    /* L2 (mirrors the second inlined SetAssocTLB.lookup) */
    s = PyList_GET_ITEM(l2->sets, (Py_ssize_t)(vpn12 & l2->mask));
    if (l2_4k) {
        e = lookup_4k(s, ka, kg, &k);
        if (e == NULL && PyErr_Occurred())
            goto fail;
        if (e != NULL && l2->lru && lru_touch(s, k, e) < 0)
            goto fail;
    }
    if (e != NULL) {
        Py_INCREF(e);
        PyObject *r = NULL;
        if (fast_slot_add(l2->stats, self->st_off[ST_HITS], 1, NULL) < 0
            || (r = PyObject_CallMethodObjArgs(l1->t, S_insert, e, va_obj, NULL)) == NULL
            || add_ll(cpu, S_cycles, self->l2_hit_cycles) < 0
            || report_stale(self, e, va_obj, acc, el_obj) < 0 || flush_if_stale(self) < 0) {
            Py_XDECREF(r);
            Py_DECREF(e);
            goto fail;
        }
        Py_DECREF(r);
        result = checked(self, e, va_obj, acc, el, el_obj);
        Py_DECREF(e);
        goto done;
    }
    if (fast_slot_add(l2->stats, self->st_off[ST_MISSES], 1, NULL) < 0)
        goto fail;

    /* NOTE: mirrors the closure's inlined Cpu._walk and WalkCache.lookup: a demand miss
     * whose L3 table is in the walk cache (the common case) walks one level */
    PyObject *epd = SLOT(regime, self->rg_epd);
    if (epd == NULL) {
        PyErr_SetString(PyExc_AttributeError, "epd");
        goto fail;
    }
    PyObject *epd_sel = PySequence_GetItem(epd, (Py_ssize_t)((va >> 55) & 1));
    int disabled = epd_sel == NULL ? -1 : PyObject_IsTrue(epd_sel);
    Py_XDECREF(epd_sel);
    if (disabled < 0)
        goto fail;
    PyObject *we = NULL, *wk = NULL;
    if (!disabled) {
        uint64_t vpn = va >> 21;
        s = PyList_GET_ITEM(self->wc_sets, (Py_ssize_t)(vpn & self->wc_mask));
        wk = PyLong_FromUnsignedLongLong((((vpn << 6) | 3) << self->tag_bits) | asid);
        if (wk == NULL)
            goto fail;
        we = PyDict_GetItemWithError(s, wk);
        if (we == NULL && PyErr_Occurred()) {
            Py_DECREF(wk);
            goto fail;
        }
    }
    if (we == NULL) {                                /* EPD, a cold or shallower walk */
        Py_XDECREF(wk);
        PyObject *fetch = acc == 2 ? Py_True : Py_False;
        result = walked(self, PyObject_CallFunctionObjArgs(self->walk_and_fill, va_obj, fetch, NULL), va_obj, acc, el, el_obj);
        goto done;
    }
    Py_INCREF(we);
    int werr = self->wc_lru && lru_touch(s, wk, we) < 0;
    Py_DECREF(wk);
    if (werr || fast_slot_add(self->wc_stats, self->st_off[ST_HITS], 1, NULL) < 0) {
        Py_DECREF(we);
        goto fail;
    }
    /* NOTE: mirrors the closure's inlined walker.walk_l3: a valid page with AF set */
    long long table_pa, tattrs_ll, pa_bits;
    if (Py_TYPE(we) != (PyTypeObject *)self->wce_type) {
        PyErr_SetString(PyExc_TypeError, "a walk cache entry is not a WalkCacheEntry");
        Py_DECREF(we);
        goto fail;
    }
    if (fast_slot_ll(we, self->we_table_pa, &table_pa) < 0 || fast_slot_ll(we, self->we_tattrs, &tattrs_ll) < 0
        || fast_slot_ll(regime, self->rg_pa_bits, &pa_bits) < 0) {
        Py_DECREF(we);
        goto fail;
    }
    uint64_t dpa = (uint64_t)table_pa + ((va >> 9) & 0xFF8);
    uint64_t desc = (Py_ssize_t)(dpa >> 3) < self->nwords ? ((uint64_t *)self->q.buf)[dpa >> 3] : 0;
    uint64_t oa = desc & self->oa_mask;
    if ((desc & self->page_af) != self->page_af || (oa >> pa_bits) != 0) {
        /* a fault, or no memory behind the table: the Python walk and its accounting */
        Py_DECREF(we);
        PyObject *mem = PyObject_GetAttr(cpu, S_mem);
        if (mem == NULL)
            goto fail;
        PyObject *w = PyObject_CallFunction(self->walk_l3, "OOOLL", mem, regime, va_obj, table_pa, tattrs_ll);
        Py_DECREF(mem);
        if (w == NULL)
            goto fail;
        PyObject *fetch = acc == 2 ? Py_True : Py_False;
        PyObject *r = PyObject_CallFunctionObjArgs(self->account, va_obj, w, Py_True, fetch, NULL);
        Py_DECREF(w);
        result = walked(self, r, va_obj, acc, el, el_obj);
        goto done;
    }
    Py_DECREF(we);
    PyObject *wxn_obj = SLOT(regime, self->rg_wxn);
    int wxn = wxn_obj == NULL ? -1 : PyObject_IsTrue(wxn_obj);
    if (wxn < 0)
        goto fail;
    PyObject *pkey = PyLong_FromUnsignedLongLong((desc & self->leaf_perm_bits) | (uint64_t)tattrs_ll | (wxn ? self->wxn_key : 0));
    if (pkey == NULL)
        goto fail;
    PyObject *perms = PyDict_GetItemWithError(self->perm_memo, pkey);
    Py_DECREF(pkey);
    if (perms != NULL)
        Py_INCREF(perms);
    else if (PyErr_Occurred())
        goto fail;
    else {
        perms = PyObject_CallFunction(self->leaf_perms_cached, "KLO", (unsigned long long)desc, tattrs_ll,
                                      wxn ? Py_True : Py_False);
        if (perms == NULL)
            goto fail;
    }
    int ng = (desc & self->ng_bit) != 0;
    /* NOTE: mirrors the closure's inlined Cpu._account (a demand walk of one read) */
    if (add_ll(cpu, S_walks, 1) < 0 || add_ll(cpu, S_walk_reads, 1) < 0 || get_ll(cpu, S_cycles, &cycles) < 0) {
        Py_DECREF(perms);
        goto fail;
    }
    cycles += self->descriptor_read + self->walk_cache_hit;
    if (set_ll(cpu, S_cycles, cycles) < 0) {
        Py_DECREF(perms);
        goto fail;
    }
    /* NOTE: mirrors the closure's inlined Translation.__init__: every slot stored directly */
    PyTypeObject *tt = (PyTypeObject *)self->translation_type;
    e = tt->tp_alloc(tt, 0);
    if (e == NULL) {
        Py_DECREF(perms);
        goto fail;
    }
    Py_ssize_t *o = self->t_off;
    PyObject *dpa_obj = PyLong_FromUnsignedLongLong(dpa), *desc_obj = PyLong_FromUnsignedLongLong(desc);
    PyObject *read = dpa_obj && desc_obj ? PyTuple_Pack(3, dpa_obj, desc_obj, three) : NULL;   /* (pa, value, level) */
    PyObject *reads = read ? PyList_New(1) : NULL;
    PyObject *tables = PyList_New(0);
    PyObject *fields[T_NFIELDS] = {
        [T_VA] = (Py_INCREF(va_obj), va_obj),
        [T_VA_BASE] = PyLong_FromUnsignedLongLong(va & ~(uint64_t)0xFFF),
        [T_PA_BASE] = PyLong_FromUnsignedLongLong(oa),
        [T_LEVEL] = (Py_INCREF(three), three),
        [T_SIZE] = PyLong_FromLong(4096),
        [T_PERMS] = perms,
        [T_NG] = (Py_INCREF(ng ? Py_True : Py_False), ng ? Py_True : Py_False),
        [T_ASID] = ng ? (Py_INCREF(asid_obj), asid_obj) : (Py_INCREF(Py_None), Py_None),
        [T_DESC] = desc_obj,
        [T_DESC_PA] = dpa_obj,
        [T_READS] = reads,
        [T_TABLES] = tables,
        [T_REFS] = PyLong_FromLong(0),
        [T_SPECULATIVE] = (Py_INCREF(Py_False), Py_False),
        [T_FILL_CYCLE] = PyLong_FromLongLong(cycles),
        [T_STALE] = (Py_INCREF(Py_False), Py_False),
    };
    if (reads != NULL)
        PyList_SET_ITEM(reads, 0, read);             /* steals read */
    else
        Py_XDECREF(read);
    int bad = 0;
    for (int i = 0; i < T_NFIELDS; i++) {            /* each a new reference, handed to its slot */
        if (fields[i] == NULL)
            bad = 1;
        else
            slot_put(e, o[i], fields[i]);
    }
    if (bad) {
        Py_DECREF(e);
        goto fail;
    }
    /* walk observers: fn(cpu, va, e, False) */
    Py_ssize_t nobs = PyList_GET_SIZE(self->walk_observers);
    for (Py_ssize_t i = 0; i < nobs; i++) {
        PyObject *fn = PyList_GET_ITEM(self->walk_observers, i);
        Py_INCREF(fn);
        PyObject *r = PyObject_CallFunctionObjArgs(fn, cpu, va_obj, e, Py_False, NULL);
        Py_DECREF(fn);
        if (r == NULL) {
            Py_DECREF(e);
            goto fail;
        }
        Py_DECREF(r);
        nobs = PyList_GET_SIZE(self->walk_observers);
    }
    /* NOTE: mirrors the closure's inlined SetAssocTLB.insert: a 4 KB Translation whose key
     * both lookups above just missed, into L2 and then L1 */
    PyObject *k_ins = ng ? ka : kg, *tag = ng ? asid_obj : NULL;
    PyObject *gtag = NULL;
    if (!ng) {
        gtag = PyLong_FromUnsignedLongLong(self->global_tag);
        if (gtag == NULL) {
            Py_DECREF(e);
            goto fail;
        }
        tag = gtag;
    }
    int ferr = fill_one(self, l2, vpn12, k_ins, tag, e) < 0 || fill_one(self, l1, vpn12, k_ins, tag, e) < 0;
    Py_XDECREF(gtag);
    if (ferr) {
        Py_DECREF(e);
        goto fail;
    }
    /* recent[cpu._recent_i & 15] = va; cpu._recent_i += 1 */
    long long ri;
    if (get_ll(cpu, S__recent_i, &ri) < 0 || PyList_SetItem(self->recent, ri & 15, (Py_INCREF(va_obj), va_obj)) < 0
        || set_ll(cpu, S__recent_i, ri + 1) < 0 || flush_if_stale(self) < 0) {
        Py_DECREF(e);
        goto fail;
    }
    result = checked(self, e, va_obj, acc, el, el_obj);
    Py_DECREF(e);
    goto done;

python:
    return PyObject_CallFunction(self->python, "OiO", va_obj, acc, el_obj);
fail:
    result = NULL;
done:
    Py_XDECREF(regime);
    Py_XDECREF(asid_obj);
    Py_XDECREF(ka);
    Py_XDECREF(kg);
    return result;
}

static PyObject *Translator_call(Translator *self, PyObject *args, PyObject *kwargs)
{
    PyObject *va_obj, *el_obj;
    int acc;
    if (kwargs != NULL)
        return PyObject_Call(self->python, args, kwargs);
    if (!PyArg_ParseTuple(args, "OiO", &va_obj, &acc, &el_obj))
        return NULL;
    return translate(self, va_obj, acc, el_obj);
}

/* ---------------------------------------------------------------- construction */

static int part_from(Part *p, PyObject *t)
{
    long long mask, ways;
    int lru;
    p->t = t;
    Py_INCREF(t);

    p->sets = PyObject_GetAttrString(t, "sets");
    p->stats = PyObject_GetAttrString(t, "stats");
    p->by_tag = PyObject_GetAttrString(t, "by_tag");
    if (p->sets == NULL || p->stats == NULL || p->by_tag == NULL)
        return -1;
    if (!PyList_CheckExact(p->sets) || !PyDict_CheckExact(p->by_tag)) {
        PyErr_SetString(PyExc_TypeError, "a TLB's sets must be a list and by_tag a dict");
        return -1;
    }
    PyObject *name = PyUnicode_InternFromString("set_mask");
    int r = get_ll(t, name, &mask);
    Py_DECREF(name);
    name = PyUnicode_InternFromString("ways");
    r = r < 0 ? r : get_ll(t, name, &ways);
    Py_DECREF(name);
    name = PyUnicode_InternFromString("lru");
    lru = r < 0 ? -1 : truth_attr(t, name);
    Py_DECREF(name);
    if (lru < 0)
        return -1;
    p->mask = (uint64_t)mask;
    p->ways = (Py_ssize_t)ways;
    p->lru = lru;
    return 0;
}

static int slot_offsets(PyObject *type, const char **names, int n, Py_ssize_t *out)
{
    for (int i = 0; i < n; i++)
        if ((out[i] = fast_slot_offset(type, names[i])) < 0)
            return -1;
    return 0;
}

/* Every object a Translator holds, for the collector (the CPU holds its Translator, and a
 * walk observer such as the hazard checker's may hold the machine: cycles the collector can
 * only free if each reference is reported, here and in Translator_clear). */
#define TRANSLATOR_OBJECTS(X) \
    X(python) X(cpu) X(machine) X(tlb) X(itlb.t) X(itlb.sets) X(itlb.stats) X(itlb.by_tag) \
    X(dtlb.t) X(dtlb.sets) X(dtlb.stats) X(dtlb.by_tag) X(l2.t) X(l2.sets) X(l2.stats) X(l2.by_tag) \
    X(wc_sets) X(wc_stats) X(walk_observers) X(recent) X(holds) X(perm_memo) X(leaf_perms_cached) \
    X(translation_type) X(fault_type) X(access) X(permission) X(account) X(walk_l3) X(walk_and_fill) \
    X(only_4k) X(regime_type) X(wce_type)

static int Translator_traverse(Translator *self, visitproc visit, void *arg)
{
#define VISIT(f) Py_VISIT(self->f);
    TRANSLATOR_OBJECTS(VISIT)
#undef VISIT
    /* (not self->q.obj: the memoryview refers to no object of a cycle, and the collector
     * must not clear it while this buffer is exported; Translator_clear releases it) */
    return 0;
}

static int Translator_clear(Translator *self)
{
#define CLEAR(f) Py_CLEAR(self->f);
    TRANSLATOR_OBJECTS(CLEAR)
#undef CLEAR
    if (self->q.obj != NULL)
        PyBuffer_Release(&self->q);
    return 0;
}

static void Translator_dealloc(Translator *self)
{
    PyObject_GC_UnTrack(self);
    Translator_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Translator_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *names[] = {"python", "cpu", "machine", "tlb", "itlb", "dtlb", "l2", "walk_cache", "q",
        "walk_observers", "recent", "holds", "perm_memo", "leaf_perms_cached", "translation", "fault", "access",
        "permission", "account", "walk_l3", "walk_and_fill", "only_4k", "l1_hit_cycles", "l2_hit_cycles",
        "descriptor_read", "walk_cache_hit", "oa_mask", "page_af", "leaf_perm_bits", "wxn_key", "ng_bit",
        "global_tag", "tag_bits", "stats_type", "regime_type", "walk_cache_entry", NULL};
    PyObject *python, *cpu, *machine, *tlb, *itlb, *dtlb, *l2, *wc, *q, *obs, *recent, *holds, *memo, *lpc,
        *tt, *ft, *access, *perm, *account, *walk_l3, *waf, *only_4k, *stats_type, *rgt, *wct;
    long long l1c, l2c, dr, wch;
    unsigned long long oa_mask, page_af, lpb, wxn_key, ng_bit, gtag;
    int tag_bits;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOOOO!O!O!O!OOOOOOOOOLLLLKKKKKKiOO!O!", names, &python, &cpu,
            &machine, &tlb, &itlb, &dtlb, &l2, &wc, &q, &PyList_Type, &obs, &PyList_Type, &recent, &PyDict_Type,
            &holds, &PyDict_Type, &memo, &lpc, &tt, &ft, &access, &perm, &account, &walk_l3, &waf, &only_4k, &l1c,
            &l2c, &dr, &wch, &oa_mask, &page_af, &lpb, &wxn_key, &ng_bit, &gtag, &tag_bits, &stats_type, &PyType_Type, &rgt,
            &PyType_Type, &wct))
        return NULL;
    Translator *self = (Translator *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
#define KEEP(field, v) (self->field = (v), Py_INCREF(v))
    KEEP(python, python); KEEP(cpu, cpu); KEEP(machine, machine); KEEP(tlb, tlb);
    KEEP(walk_observers, obs); KEEP(recent, recent); KEEP(holds, holds); KEEP(perm_memo, memo);
    KEEP(leaf_perms_cached, lpc); KEEP(translation_type, tt); KEEP(fault_type, ft); KEEP(access, access);
    KEEP(permission, perm); KEEP(account, account); KEEP(walk_l3, walk_l3); KEEP(walk_and_fill, waf);
    KEEP(only_4k, only_4k); KEEP(regime_type, rgt); KEEP(wce_type, wct);
#undef KEEP
    self->l1_hit_cycles = l1c; self->l2_hit_cycles = l2c; self->descriptor_read = dr; self->walk_cache_hit = wch;
    self->oa_mask = oa_mask; self->page_af = page_af; self->leaf_perm_bits = lpb; self->wxn_key = wxn_key;
    self->ng_bit = ng_bit; self->global_tag = gtag; self->tag_bits = tag_bits;
    self->tag_mask = ((uint64_t)1 << tag_bits) - 1;
    if (!PyType_Check(tt) || part_from(&self->itlb, itlb) < 0 || part_from(&self->dtlb, dtlb) < 0
        || part_from(&self->l2, l2) < 0)
        goto fail;
    static const char *regime_fields[] = {"asid", "epd", "pa_bits", "wxn"};
    static const char *wce_fields[] = {"table_pa", "tattrs"};
    Py_ssize_t rg[4], wo[2];
    if (slot_offsets(tt, translation_fields, T_NFIELDS, self->t_off) < 0
        || slot_offsets(stats_type, stats_fields, ST_NFIELDS, self->st_off) < 0
        || slot_offsets(rgt, regime_fields, 4, rg) < 0 || slot_offsets(wct, wce_fields, 2, wo) < 0)
        goto fail;
    self->rg_asid = rg[0]; self->rg_epd = rg[1]; self->rg_pa_bits = rg[2]; self->rg_wxn = rg[3];
    self->we_table_pa = wo[0]; self->we_tattrs = wo[1];

    long long wc_mask;
    PyObject *name = PyUnicode_InternFromString("set_mask");
    int r = get_ll(wc, name, &wc_mask);
    Py_DECREF(name);
    if (r < 0)
        goto fail;
    self->wc_mask = (uint64_t)wc_mask;
    name = PyUnicode_InternFromString("lru");
    self->wc_lru = truth_attr(wc, name);
    Py_DECREF(name);
    self->wc_sets = PyObject_GetAttrString(wc, "sets");
    self->wc_stats = PyObject_GetAttrString(wc, "stats");
    if (self->wc_lru < 0 || self->wc_sets == NULL || self->wc_stats == NULL)
        goto fail;
    if (!PyList_CheckExact(self->wc_sets)) {
        PyErr_SetString(PyExc_TypeError, "the walk cache's sets must be a list");
        goto fail;
    }
    if (PyObject_GetBuffer(q, &self->q, PyBUF_SIMPLE) < 0)
        goto fail;
    self->nwords = self->q.len / 8;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static PyTypeObject TranslatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "emu._fast_translate.Translator",
    .tp_doc = PyDoc_STR("translate(va, acc, el) of one CPU: Cpu._build_translate's closure, compiled"),
    .tp_basicsize = sizeof(Translator),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Translator_new,
    .tp_dealloc = (destructor)Translator_dealloc,
    .tp_traverse = (traverseproc)Translator_traverse,
    .tp_clear = (inquiry)Translator_clear,
    .tp_call = (ternaryfunc)Translator_call,
};

/* ---------------------------------------------------------------- the fill hook itself */

/* struct uc_tlb_entry (include/unicorn/unicorn.h, Unicorn 2.1) */
typedef struct {
    uint64_t paddr;
    uint32_t perms;
} uc_tlb_entry;

/* The compiled twin of Cpu._build_fill_hook's `fill` (fast mode), registered with
 * uc_hook_add directly: Unicorn calls it with no ctypes layer in between. */
typedef struct {
    PyObject_HEAD
    Translator *translate;
    PyObject *cpu, *holds, *code_pa, *code_fetch, *hook_failed, *uc;
    uint64_t sentinel_page, mem_size;
} FillHook;

static PyObject *S__probed, *S__fault, *S_faults, *S__bus_error, *S_pa_base, *S_size, *S_perms;

/* Mirrors `fill`'s body: the answer to one Unicorn TLB miss. -1 with an exception set. */
static int fill_entry(FillHook *h, uint64_t va, int access, uc_tlb_entry *entry)
{
    if (va == h->sentinel_page) {
        /* Unicorn's probe at the end of every run (or a guest fetch in the hole, which
         * Cpu.run recognises by the PC): not a translation the model is asked for */
        return PyObject_SetAttr(h->cpu, S__probed, Py_True) < 0 ? -1 : 0;
    }
    int acc = access - 16;                           /* UC_MEM_READ/WRITE/FETCH -> 0/1/2 */
    PyObject *el_obj = PyObject_GetAttr(h->cpu, S_el);
    if (el_obj == NULL)
        return -1;
    long el = PyLong_AsLong(el_obj);
    PyObject *va_obj = PyLong_FromUnsignedLongLong(va);
    PyObject *e = va_obj == NULL || (el == -1 && PyErr_Occurred()) ? NULL : translate(h->translate, va_obj, acc, el_obj);
    Py_DECREF(el_obj);
    Py_XDECREF(va_obj);
    if (e == NULL)
        return -1;
    int r = -1;
    if ((PyObject *)Py_TYPE(e) == h->translate->fault_type) {
        if (PyObject_SetAttr(h->cpu, S__fault, e) == 0 && add_ll(h->cpu, S_faults, 1) == 0)
            r = 0;
        goto out;
    }
    Py_ssize_t *o = h->translate->t_off;
    PyObject *pb = SLOT(e, o[T_PA_BASE]), *sz = SLOT(e, o[T_SIZE]), *pm = SLOT(e, o[T_PERMS]);
    if (pb == NULL || sz == NULL || pm == NULL) {
        PyErr_SetString(PyExc_AttributeError, "a Translation slot is unset");
        goto out;
    }
    uint64_t pa_base = PyLong_AsUnsignedLongLong(pb), size = PyLong_AsUnsignedLongLong(sz);
    long perms = PyLong_AsLong(pm);
    if (PyErr_Occurred())
        goto out;
    uint64_t paddr = pa_base | (va & (size - 1));
    if (paddr >= h->mem_size) {
        /* no memory behind the PA the model gave: a bus error (an external abort), refused
         * so that Unicorn keeps no entry for it */
        PyObject *t = Py_BuildValue("(iK)", acc, (unsigned long long)paddr);
        if (t != NULL && PyObject_SetAttr(h->cpu, S__bus_error, t) == 0)
            r = 0;
        Py_XDECREF(t);
        goto out;
    }
    PyObject *id = PyLong_FromVoidPtr(e);            /* holds[id(e)] = e (bounded by Cpu.run) */
    if (id == NULL || PyDict_SetItem(h->holds, id, e) < 0) {
        Py_XDECREF(id);
        goto out;
    }
    Py_DECREF(id);
    entry->paddr = paddr;
    if (el == 0)
        perms >>= 3;
    if (acc == 2) {
        entry->perms = (uint32_t)(perms & 4);
        /* if code_pa.get(va & ~0xFFF) != paddr & ~0xFFF: code_fetch(va, paddr) */
        PyObject *page = PyLong_FromUnsignedLongLong(va & ~(uint64_t)0xFFF);
        if (page == NULL)
            goto out;
        PyObject *known = PyDict_GetItemWithError(h->code_pa, page);
        Py_DECREF(page);
        if (known == NULL && PyErr_Occurred())
            goto out;
        uint64_t kv = known == NULL ? (uint64_t)-1 : PyLong_AsUnsignedLongLong(known);
        if (PyErr_Occurred())
            goto out;
        if (known == NULL || kv != (paddr & ~(uint64_t)0xFFF)) {
            PyObject *res = PyObject_CallFunction(h->code_fetch, "KK", (unsigned long long)va, (unsigned long long)paddr);
            if (res == NULL)
                goto out;
            Py_DECREF(res);
        }
    } else
        entry->perms = (uint32_t)(perms & 3);
    r = 1;
out:
    Py_DECREF(e);
    return r;
}

/* uc_cb_tlbevent_t. Called by Unicorn inside uc_emu_start, which ctypes called with the GIL
 * released: take it. Nothing may escape: an exception goes to ucb.hook_failed, which stops
 * the run and keeps it for Cpu.run to re-raise (as the Python hook does). */
static bool fill_callback(void *uc, uint64_t va, int access, uc_tlb_entry *entry, void *user_data)
{
    FillHook *h = (FillHook *)user_data;
    PyGILState_STATE g = PyGILState_Ensure();
    int r = fill_entry(h, va, access, entry);
    if (r < 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
        PyObject *res = value == NULL ? NULL : PyObject_CallFunctionObjArgs(h->hook_failed, h->uc, value, NULL);
        if (res == NULL)
            PyErr_WriteUnraisable((PyObject *)h);
        Py_XDECREF(res);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        r = 0;
    }
    PyGILState_Release(g);
    return r == 1;
}

static PyObject *FillHook_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *names[] = {"translate", "cpu", "holds", "code_pa", "code_fetch", "hook_failed", "uc",
                            "sentinel_page", "mem_size", NULL};
    PyObject *tr, *cpu, *holds, *code_pa, *code_fetch, *hook_failed, *uc;
    unsigned long long sentinel_page, mem_size;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!OO!O!OOOKK", names, &TranslatorType, &tr, &cpu, &PyDict_Type,
                                     &holds, &PyDict_Type, &code_pa, &code_fetch, &hook_failed, &uc,
                                     &sentinel_page, &mem_size))
        return NULL;
    FillHook *self = (FillHook *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
#define KEEP(field, v) (self->field = (v), Py_INCREF(v))
    KEEP(translate, (Translator *)tr); KEEP(cpu, cpu); KEEP(holds, holds); KEEP(code_pa, code_pa);
    KEEP(code_fetch, code_fetch); KEEP(hook_failed, hook_failed); KEEP(uc, uc);
#undef KEEP
    self->sentinel_page = sentinel_page;
    self->mem_size = mem_size;
    return (PyObject *)self;
}

/* every object a FillHook holds, for the collector (as TRANSLATOR_OBJECTS) */
#define FILLHOOK_OBJECTS(X) X(translate) X(cpu) X(holds) X(code_pa) X(code_fetch) X(hook_failed) X(uc)

static int FillHook_traverse(FillHook *self, visitproc visit, void *arg)
{
#define VISIT(f) Py_VISIT(self->f);
    FILLHOOK_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int FillHook_clear(FillHook *self)
{
#define CLEAR(f) Py_CLEAR(self->f);
    FILLHOOK_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void FillHook_dealloc(FillHook *self)
{
    PyObject_GC_UnTrack(self);
    FillHook_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* what uc_hook_add needs: the C callback and its user_data (this object, kept alive by the CPU) */
static PyObject *FillHook_callback(FillHook *self, void *closure)
{
    return PyLong_FromVoidPtr((void *)fill_callback);
}

static PyObject *FillHook_user_data(FillHook *self, void *closure)
{
    return PyLong_FromVoidPtr((void *)self);
}

static PyGetSetDef FillHook_getset[] = {
    {"callback", (getter)FillHook_callback, NULL, "address of the uc_cb_tlbevent_t", NULL},
    {"user_data", (getter)FillHook_user_data, NULL, "the user_data to register it with", NULL},
    {NULL},
};

static PyTypeObject FillHookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "emu._fast_translate.FillHook",
    .tp_doc = PyDoc_STR("UC_HOOK_TLB_FILL of one CPU in fast mode: Cpu._build_fill_hook's fill, compiled"),
    .tp_basicsize = sizeof(FillHook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = FillHook_new,
    .tp_dealloc = (destructor)FillHook_dealloc,
    .tp_traverse = (traverseproc)FillHook_traverse,
    .tp_clear = (inquiry)FillHook_clear,
    .tp_getset = FillHook_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fast_translate",
    "The compiled twin of Cpu._build_translate's closure (see emu/fastpath.py).", -1, NULL};

PyMODINIT_FUNC PyInit__fast_translate(void)
{
#define INTERN(n) if ((S_##n = PyUnicode_InternFromString(#n)) == NULL) return NULL
    INTERN(regime); INTERN(_tbi); INTERN(asid); INTERN(epd); INTERN(pa_bits); INTERN(wxn); INTERN(shifts);
    INTERN(cycles); INTERN(trace); INTERN(checker); INTERN(stale_use); INTERN(insert); INTERN(_uc_stale);
    INTERN(_uc_flush); INTERN(walks); INTERN(walk_reads); INTERN(table_pa); INTERN(tattrs); INTERN(_recent_i);
    INTERN(lost); INTERN(shift_count); INTERN(_update_shifts); INTERN(_dropped); INTERN(randrange);
    INTERN(access); INTERN(el); INTERN(mem); INTERN(stale);
    if ((three = PyLong_FromLong(3)) == NULL)
        return NULL;
    INTERN(_probed); INTERN(_fault); INTERN(faults); INTERN(_bus_error); INTERN(pa_base); INTERN(size);
    INTERN(perms);
#undef INTERN
    if (PyType_Ready(&TranslatorType) < 0 || PyType_Ready(&FillHookType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TranslatorType);
    if (PyModule_AddObject(m, "Translator", (PyObject *)&TranslatorType) < 0) {
        Py_DECREF(&TranslatorType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&FillHookType);
    if (PyModule_AddObject(m, "FillHook", (PyObject *)&FillHookType) < 0) {
        Py_DECREF(&FillHookType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
