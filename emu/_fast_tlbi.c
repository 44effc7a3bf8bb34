/* The compiled twin of emu/tlb.py:invalidate_va: one completed by-VA TLBI (VA or VAA
 * scope) applied to the TLBs of every CPU it reaches.
 *
 * An Invalidator is made once per machine (Machine.invalidate_va) from its CPUs' TLB
 * hierarchies, and keeps of each structure what lives as long as it: the list of dict
 * sets, the per-ASID index (by_tag, by_asid) and the TLBStats (tlb.py never rebinds them).
 * It works on those same Python objects, with exactly the same effects in the same order
 * as the Python, and reads what tlb.py does rebind (shifts, shift_count, levels,
 * level_count, on_remove) where the Python reads it. What the Python's inlined fast path
 * does not handle either (sizes other than 4 KB held, VAA scope, a walk cache holding L1
 * tables) goes to the same Python methods the Python calls: t._invalidate_va,
 * t._update_shifts, t.on_remove(e), w._invalidate_va; WalkCache._update_levels (one table
 * lookup) is mirrored here. Operands whose keys cannot be built from 64-bit arithmetic (a
 * VA outside [0, 2^64), an ASID wider than the tag), and hierarchies of another machine,
 * go to the Python invalidate_va whole.
 *
 * Keys, as in tlb.py: ((vpn << 6 | shift) << TAG_BITS) | tag, a Python int that may be wider
 * than 64 bits (a kernel VA's 4 KB vpn has 52 bits).
 *
 * Cost: what is left is Python object operations (dict lookups and deletions with int keys
 * compared by value, int counters, the on_remove calls, freeing the removed entries), the
 * same on both paths: the C saves the interpreter around them and the attribute lookups
 * (the counters are slots, stored directly at their offsets).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_fast_slots.h"
#include <stddef.h>
#include <stdint.h>

/* shared with tlb.py, set by configure() */
static PyObject *only_4k;          /* tlb._ONLY_4K: SetAssocTLB.shifts when only 4 KB entries are held */
static PyObject *global_tag;       /* tlb.GLOBAL_TAG */
static PyObject *scope_va;         /* Scope.VA */
static PyObject *python_fn;        /* tlb.invalidate_va, for operands handled only there */
static PyObject *python_asid_fn;   /* tlb.invalidate_asid, likewise */
static PyObject *scope_asid;       /* Scope.ASID */
static PyObject *levels_present;   /* tlb._LEVELS_PRESENT (from python_fn's module), or NULL */
static unsigned tag_bits;
static uint64_t global_tag_v;
static PyTypeObject *stats_type;         /* tlb.TLBStats */
static PyTypeObject *translation_type;   /* walker.Translation (BlockSlice is a subclass) */

/* attribute names, interned once at module init */
static PyObject *s_leaf_tlbs, *s_walk_cache, *s_stats, *s_flush_ops, *s_flushed_entries,
    *s_shifts, *s_sets, *s_set_mask, *s_by_tag, *s_shift_count, *s_update_shifts, *s_refs,
    *s_on_remove, *s_invalidate_va, *s_levels, *s_by_asid, *s_level_count, *s_update_levels,
    *s_scope, *s_last_level, *s_levels_present, *s_slice_blocks, *s_invalidate_asid;
static PyObject *empty_tuple, *zero;

/* Attributes are read with getattr, never from an instance's __dict__: in 3.11 the first
 * read of an instance's __dict__ turns its inline values into a dict for good, after which
 * every Python method reads that object's attributes more slowly (2.5 times for a plain
 * attribute load measured here; SetAssocTLB.lookup took 1.6 times as long). */
/* obj.name, a new reference */
static inline PyObject *
get(PyObject *obj, PyObject *name)
{
    return PyObject_GetAttr(obj, name);
}

/* What an Invalidator keeps of one TLB structure (SetAssocTLB or WalkCache): the objects
 * that live as long as it (tlb.py never rebinds them; the Python closure of the miss path
 * keeps them too). What tlb.py does rebind (shifts, shift_count, levels, level_count,
 * on_remove) is read where the Python reads it. */
struct part {
    PyObject *t;            /* the structure */
    PyObject *sets;         /* list of dicts */
    uint64_t mask;
    PyObject *index;        /* by_tag (leaf TLBs) or by_asid (walk cache): tag -> {key: entry} */
    PyObject *stats;        /* TLBStats */
};

/* slot offsets (dataclass(slots=True) member descriptors, checked when an Invalidator is made) */
static Py_ssize_t off_flush_ops, off_flushed_entries, off_refs;


/* ((vpn << 6 | shift) << tag_bits) | tag as a Python int, wider than 64 bits if need be */
static PyObject *
make_key(uint64_t vpn, unsigned shift, uint64_t tag)
{
    unsigned kshift = 6 + tag_bits;
    uint64_t low = (uint64_t)shift << tag_bits | tag;
    if ((vpn >> (64 - kshift)) == 0)
        return PyLong_FromUnsignedLongLong(vpn << kshift | low);
    PyObject *v = PyLong_FromUnsignedLongLong(vpn), *sh = NULL, *hi = NULL, *lo = NULL, *k = NULL;
    if (v == NULL)
        return NULL;
    sh = PyLong_FromUnsignedLong(kshift);
    if (sh != NULL)
        hi = PyNumber_Lshift(v, sh);
    if (hi != NULL)
        lo = PyLong_FromUnsignedLongLong(low);
    if (lo != NULL)
        k = PyNumber_Or(hi, lo);
    Py_XDECREF(lo);
    Py_XDECREF(hi);
    Py_XDECREF(sh);
    Py_DECREF(v);
    return k;
}

/* sets[vpn & mask], a borrowed reference to an exact dict (sets is held by the caller) */
static PyObject *
pick_set(PyObject *sets, uint64_t mask, uint64_t vpn)
{
    Py_ssize_t i = (Py_ssize_t)(vpn & mask);
    if (i >= PyList_GET_SIZE(sets)) {
        PyErr_SetString(PyExc_IndexError, "_fast_tlbi: set index out of range");
        return NULL;
    }
    PyObject *s = PyList_GET_ITEM(sets, i);
    if (!PyDict_CheckExact(s)) {
        PyErr_SetString(PyExc_TypeError, "_fast_tlbi: a TLB set must be a dict");
        return NULL;
    }
    return s;
}

/* pop key k from the exact dict s: a new reference, NULL with no error if absent */
static PyObject *
dict_pop(PyObject *s, PyObject *k)
{
    PyObject *e = PyDict_GetItemWithError(s, k);
    if (e == NULL)
        return NULL;
    Py_INCREF(e);
    if (PyDict_DelItem(s, k) < 0) {
        Py_DECREF(e);
        return NULL;
    }
    return e;
}

/* mirrors `d = index[tag]; del d[k]; if not d: del index[tag]` (by_tag, by_asid: dicts of
 * dicts, as tlb.py builds them) */
static int
unindex(PyObject *index, PyObject *tag, PyObject *k)
{
    PyObject *d = PyDict_GetItemWithError(index, tag);
    if (d == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, tag);
        return -1;
    }
    if (!PyDict_CheckExact(d)) {
        PyErr_SetString(PyExc_TypeError, "_fast_tlbi: an index entry must be a dict");
        return -1;
    }
    Py_INCREF(d);
    int rc = PyDict_DelItem(d, k);
    if (rc == 0 && PyDict_GET_SIZE(d) == 0)
        rc = PyDict_DelItem(index, tag);
    Py_DECREF(d);
    return rc;
}

/* mirrors `lst = obj.<name>; c = lst[i] - 1; lst[i] = c` (shift_count, level_count);
 * *c the new count; 0, or -1 on error */
static int
count_down(PyObject *obj, PyObject *name, Py_ssize_t i, long long *c)
{
    PyObject *lst = get(obj, name);
    if (lst == NULL)
        return -1;
    int rc = -1;
    PyObject *v = PyList_CheckExact(lst) ? PyList_GetItem(lst, i) : PySequence_GetItem(lst, i);
    if (v != NULL) {
        *c = PyLong_AsLongLong(v) - 1;
        int err = *c == -2 && PyErr_Occurred();
        if (!PyList_CheckExact(lst))
            Py_DECREF(v);                       /* PySequence_GetItem's new reference */
        PyObject *nv = err ? NULL : PyLong_FromLongLong(*c);
        if (nv != NULL) {
            if (PyList_CheckExact(lst))
                rc = PyList_SetItem(lst, i, nv);    /* steals nv, drops the old count */
            else {
                rc = PySequence_SetItem(lst, i, nv);
                Py_DECREF(nv);
            }
        }
    }
    Py_DECREF(lst);
    return rc;
}

/* call obj.name() and drop the result */
static int
call_method0(PyObject *obj, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(obj, name);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* mirrors tlb.py:invalidate_va, the 4 KB unrolled loop body (SetAssocTLB._dropped_4k
 * inlined) for one key k of tag `tag` popped from set s: 1 if removed, 0 if absent, -1 */
static int
drop_4k(struct part *p, PyObject *s, PyObject *k, PyObject *tag)
{
    PyObject *t = p->t;
    PyObject *e = dict_pop(s, k);
    if (e == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (unindex(p->index, tag, k) < 0 || fast_slot_add(p->stats, off_flushed_entries, 1, NULL) < 0)
        goto fail;
    long long c;
    if (count_down(t, s_shift_count, 12, &c) < 0)
        goto fail;
    if (c == 0) {
        PyObject *shifts = get(t, s_shifts);
        if (shifts == NULL)
            goto fail;
        int only = shifts == only_4k;
        Py_DECREF(shifts);
        if (only ? PyObject_SetAttr(t, s_shifts, empty_tuple) < 0 : call_method0(t, s_update_shifts) < 0)
            goto fail;
    }
    long long r;                        /* e.refs -= 1, then read back */
    if (!PyObject_TypeCheck(e, translation_type)) {
        PyErr_SetString(PyExc_TypeError, "_fast_tlbi: a TLB entry is not a Translation");
        goto fail;
    }
    if (fast_slot_add(e, off_refs, -1, &r) < 0)
        goto fail;
    if (r == 0) {
        PyObject *on_remove = get(t, s_on_remove);
        if (on_remove == NULL)
            goto fail;
        if (on_remove != Py_None) {
            PyObject *res = PyObject_CallOneArg(on_remove, e);
            Py_DECREF(on_remove);
            if (res == NULL)
                goto fail;
            Py_DECREF(res);
        } else
            Py_DECREF(on_remove);
    }
    Py_DECREF(e);
    return 1;
fail:
    Py_DECREF(e);
    return -1;
}

/* mirrors WalkCache._update_levels: levels = _LEVELS_PRESENT[(lc[3] > 0) << 2 | (lc[2] > 0) << 1
 * | (lc[1] > 0)] (the method itself if tlb.py's table or the counts are not as expected) */
static int
update_levels(PyObject *w)
{
    PyObject *lc = get(w, s_level_count);
    if (lc == NULL)
        return -1;
    int idx = -1;
    if (levels_present != NULL && PyList_CheckExact(lc) && PyList_GET_SIZE(lc) >= 4) {
        idx = 0;
        for (int lv = 1; lv <= 3 && idx >= 0; lv++) {
            PyObject *v = PyList_GET_ITEM(lc, lv);
            int pos = PyLong_CheckExact(v) ? PyObject_RichCompareBool(v, zero, Py_GT) : -1;
            if (pos < 0) {
                PyErr_Clear();                  /* not a plain count: the method decides */
                idx = -1;
            } else
                idx |= pos << (lv - 1);
        }
    }
    Py_DECREF(lc);
    if (idx < 0)
        return call_method0(w, s_update_levels);
    return PyObject_SetAttr(w, s_levels, PyList_GET_ITEM(levels_present, idx));
}

/* n += m where m is what a Python _invalidate_va returned; mirrors
 * `if m: x.stats.flushed_entries += m; n += m` */
static int
add_returned(struct part *p, PyObject *m, long long *n)
{
    int truth = PyObject_IsTrue(m);
    if (truth <= 0)
        return truth;
    long long v = PyLong_AsLongLong(m);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (fast_slot_add(p->stats, off_flushed_entries, v, NULL) < 0)
        return -1;
    *n += v;
    return 0;
}

/* the operands of one call, computed once for every CPU */
struct op_keys {
    PyObject *va, *asid;        /* the caller's objects */
    uint64_t vpn12, v2, v3;
    int by_asid, tables;
    PyObject *ka, *kg;          /* 4 KB keys: the ASID's and the global one */
    PyObject *k2, *k3;          /* walk-cache keys of the L2 and L3 tables (by ASID only) */
    PyObject *leaf_tags, *wc_tags;   /* the tags argument of _invalidate_va, built when first needed */
};

/* mirrors tlb.py:invalidate_va, the loop body for one leaf TLB */
static int
leaf_tlb(struct part *p, struct op_keys *o, long long *n)
{
    PyObject *t = p->t;
    if (fast_slot_add(p->stats, off_flush_ops, 1, NULL) < 0)
        return -1;
    PyObject *shifts = get(t, s_shifts);
    if (shifts == NULL)
        return -1;
    int any = PyObject_IsTrue(shifts);
    int only = shifts == only_4k;
    Py_DECREF(shifts);
    if (any <= 0)
        return any;
    if (!only || !o->by_asid) {
        /* other sizes held, or VAA scope: SetAssocTLB._invalidate_va */
        PyObject *tags = Py_None;
        if (o->by_asid) {
            if (o->leaf_tags == NULL && (o->leaf_tags = PyTuple_Pack(2, o->asid, global_tag)) == NULL)
                return -1;
            tags = o->leaf_tags;
        }
        PyObject *m = PyObject_CallMethodObjArgs(t, s_invalidate_va, o->va, tags, NULL);
        if (m == NULL)
            return -1;
        int rc = add_returned(p, m, n);
        Py_DECREF(m);
        return rc;
    }
    /* the 4 KB unrolled case */
    PyObject *s = pick_set(p->sets, p->mask, o->vpn12);
    Py_XINCREF(s);                      /* held: on_remove could change the list */
    if (s == NULL)
        return -1;
    int r1 = drop_4k(p, s, o->ka, o->asid);
    int r2 = r1 < 0 ? -1 : drop_4k(p, s, o->kg, global_tag);
    Py_DECREF(s);
    if (r2 < 0)
        return -1;
    *n += r1 + r2;
    return 0;
}

/* mirrors tlb.py:invalidate_va, the walk-cache part for one hierarchy, with
 * WalkCache._dropped and _uncounted inlined for the by-ASID case */
static int
walk_cache(struct part *p, struct op_keys *o, long long *n)
{
    PyObject *w = p->t;
    int rc = -1;
    if (fast_slot_add(p->stats, off_flush_ops, 1, NULL) < 0)
        return -1;
    PyObject *levels = get(w, s_levels);
    if (levels == NULL)
        return -1;
    int any = PyObject_IsTrue(levels);
    if (any <= 0) {
        rc = any;
        goto done;
    }
    if (!PyTuple_CheckExact(levels)) {
        PyErr_SetString(PyExc_TypeError, "_fast_tlbi: WalkCache.levels must be a tuple");
        goto done;
    }
    Py_ssize_t nl = PyTuple_GET_SIZE(levels);
    long last = PyLong_AsLong(PyTuple_GET_ITEM(levels, nl - 1));
    if (last == -1 && PyErr_Occurred())
        goto done;
    if (!o->by_asid || last < 2) {
        /* VAA scope, or L1 tables held: WalkCache._invalidate_va */
        PyObject *tags = Py_None;
        if (o->by_asid) {
            if (o->wc_tags == NULL && (o->wc_tags = PyTuple_Pack(1, o->asid)) == NULL)
                goto done;
            tags = o->wc_tags;
        }
        PyObject *m = PyObject_CallMethodObjArgs(w, s_invalidate_va, o->va, tags, NULL);
        if (m == NULL)
            goto done;
        rc = add_returned(p, m, n);
        Py_DECREF(m);
        goto done;
    }
    for (Py_ssize_t i = 0; i < nl; i++) {
        long level = PyLong_AsLong(PyTuple_GET_ITEM(levels, i));
        if (level == -1 && PyErr_Occurred())
            goto done;
        if (level != 2 && level != 3) {
            PyErr_Format(PyExc_ValueError, "_fast_tlbi: walk-cache level %ld", level);
            goto done;
        }
        PyObject *k = level == 2 ? o->k2 : o->k3;
        PyObject *s = pick_set(p->sets, p->mask, level == 2 ? o->v2 : o->v3);
        if (s == NULL)
            goto done;
        PyObject *e = dict_pop(s, k);
        if (e == NULL) {
            if (PyErr_Occurred())
                goto done;
            continue;
        }
        Py_DECREF(e);
        if (unindex(p->index, o->asid, k) < 0)
            goto done;
        long long c;
        if (count_down(w, s_level_count, level, &c) < 0 || (c == 0 && update_levels(w) < 0))
            goto done;
        if (fast_slot_add(p->stats, off_flushed_entries, 1, NULL) < 0)
            goto done;
        *n += 1;
    }
    rc = 0;
done:
    Py_DECREF(levels);
    return rc;
}

/* ---------------------------------------------------------------- Invalidator */

/* One CPU's TLBs as the Invalidator keeps them: the TLBHierarchy, its leaf TLBs in
 * `_leaf_tlbs` order, its walk cache. */
struct cpu_tlbs {
    PyObject *h;
    Py_ssize_t nleaf;
    struct part leaf[4];
    struct part wc;
};

/* Invalidator(hierarchies): the compiled invalidate_va of one machine, knowing its CPUs'
 * TLBs (Machine.tlbs); called as invalidate_va(hierarchies, op, va, asid). A call naming a
 * hierarchy it does not know goes to the Python whole. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t ncpus;
    struct cpu_tlbs *cpus;
} Invalidator;

static PyObject *Invalidator_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static int part_of(struct part *p, PyObject *t, PyObject *index_name)
{
    p->t = t;
    Py_INCREF(t);
    p->sets = get(t, s_sets);
    p->index = get(t, index_name);
    p->stats = get(t, s_stats);
    PyObject *mask = get(t, s_set_mask);
    if (p->sets == NULL || p->index == NULL || p->stats == NULL || mask == NULL) {
        Py_XDECREF(mask);
        return -1;
    }
    p->mask = PyLong_AsUnsignedLongLong(mask);
    Py_DECREF(mask);
    if (p->mask == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    if (!PyList_CheckExact(p->sets) || !PyDict_CheckExact(p->index) || !PyObject_TypeCheck(p->stats, stats_type)) {
        PyErr_SetString(PyExc_TypeError, "_fast_tlbi: a TLB's sets must be a list of dicts, its index a dict, "
                                         "its stats a TLBStats");
        return -1;
    }
    return 0;
}

static void part_clear(struct part *p)
{
    Py_CLEAR(p->t);
    Py_CLEAR(p->sets);
    Py_CLEAR(p->index);
    Py_CLEAR(p->stats);
}

static void Invalidator_release(Invalidator *self)
{
    if (self->cpus == NULL)
        return;
    for (Py_ssize_t i = 0; i < self->ncpus; i++) {
        struct cpu_tlbs *c = &self->cpus[i];
        Py_CLEAR(c->h);
        for (Py_ssize_t j = 0; j < c->nleaf; j++)
            part_clear(&c->leaf[j]);
        part_clear(&c->wc);
    }
    PyMem_Free(self->cpus);
    self->cpus = NULL;
    self->ncpus = 0;
}

static PyObject *Invalidator_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *names[] = {"hierarchies", NULL};
    PyObject *hs;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:Invalidator", names, &hs))
        return NULL;
    if (python_fn == NULL || stats_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fast_tlbi.configure() was not called");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(hs, "Invalidator: hierarchies must be a sequence");
    if (seq == NULL)
        return NULL;
    Invalidator *self = (Invalidator *)type->tp_alloc(type, 0);
    if (self == NULL)
        goto fail;
    self->vectorcall = Invalidator_call;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    self->cpus = PyMem_Calloc(n ? n : 1, sizeof(struct cpu_tlbs));
    if (self->cpus == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        struct cpu_tlbs *c = &self->cpus[i];
        self->ncpus = i + 1;
        c->h = PySequence_Fast_GET_ITEM(seq, i);
        Py_INCREF(c->h);
        PyObject *leaf = get(c->h, s_leaf_tlbs);
        PyObject *ls = leaf == NULL ? NULL : PySequence_Fast(leaf, "Invalidator: _leaf_tlbs must be a sequence");
        Py_XDECREF(leaf);
        if (ls == NULL)
            goto fail;
        if (PySequence_Fast_GET_SIZE(ls) > 4) {
            Py_DECREF(ls);
            PyErr_SetString(PyExc_ValueError, "Invalidator: more than 4 leaf TLBs");
            goto fail;
        }
        for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(ls); j++) {
            c->nleaf = j + 1;
            if (part_of(&c->leaf[j], PySequence_Fast_GET_ITEM(ls, j), s_by_tag) < 0) {
                Py_DECREF(ls);
                goto fail;
            }
        }
        Py_DECREF(ls);
        PyObject *w = get(c->h, s_walk_cache);
        int r = w == NULL ? -1 : part_of(&c->wc, w, s_by_asid);
        Py_XDECREF(w);
        if (r < 0)
            goto fail;
    }
    Py_DECREF(seq);
    return (PyObject *)self;
fail:
    Py_DECREF(seq);
    Py_XDECREF(self);
    return NULL;
}

static void Invalidator_dealloc(Invalidator *self)
{
    PyObject_GC_UnTrack(self);
    Invalidator_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int part_traverse(struct part *p, visitproc visit, void *arg)
{
    Py_VISIT(p->t);
    Py_VISIT(p->sets);
    Py_VISIT(p->index);
    Py_VISIT(p->stats);
    return 0;
}

/* every object an Invalidator holds, for the collector (the machine holds its Invalidator) */
static int Invalidator_traverse(Invalidator *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->ncpus; i++) {
        struct cpu_tlbs *c = &self->cpus[i];
        Py_VISIT(c->h);
        for (Py_ssize_t j = 0; j < c->nleaf; j++) {
            int r = part_traverse(&c->leaf[j], visit, arg);
            if (r)
                return r;
        }
        int r = part_traverse(&c->wc, visit, arg);
        if (r)
            return r;
    }
    return 0;
}

static int Invalidator_clear(Invalidator *self)
{
    Invalidator_release(self);
    return 0;
}

#define REACH_ON_STACK 16

/* This machine's TLBs for each of `hierarchies` (a list or tuple, in Machine.tlbs order or
 * a part of it: a cursor finds each), in `stack` or, for more than REACH_ON_STACK, on the
 * heap (reach_free); *nh their number. NULL with *python set and no error when the Python
 * must do the call (not a list or tuple, or a hierarchy of another machine); NULL with an
 * error when memory ran out. */
static struct cpu_tlbs **
reach_of(Invalidator *self, PyObject *hierarchies, struct cpu_tlbs **stack, Py_ssize_t *nh, int *python)
{
    if (*python || !(PyList_CheckExact(hierarchies) || PyTuple_CheckExact(hierarchies))) {
        *python = 1;
        return NULL;
    }
    *nh = PySequence_Fast_GET_SIZE(hierarchies);
    struct cpu_tlbs **reach = *nh <= REACH_ON_STACK ? stack : PyMem_Malloc(*nh * sizeof *reach);
    if (reach == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0, cur = 0; i < *nh; i++) {
        PyObject *h = PySequence_Fast_GET_ITEM(hierarchies, i);
        Py_ssize_t j = 0;
        for (; j < self->ncpus && self->cpus[(cur + j) % self->ncpus].h != h; j++)
            ;
        if (j == self->ncpus) {
            if (reach != stack)
                PyMem_Free(reach);
            *python = 1;
            return NULL;
        }
        cur = (cur + j) % self->ncpus;
        reach[i] = &self->cpus[cur];
    }
    return reach;
}

static void
reach_free(struct cpu_tlbs **reach, struct cpu_tlbs **stack)
{
    if (reach != stack)
        PyMem_Free(reach);
}

/* invalidate_va(hierarchies, op, va, asid) -> entries removed; see tlb.py:invalidate_va */
static PyObject *
Invalidator_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Invalidator *self = (Invalidator *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 4 || kwnames != NULL) {
        PyErr_Format(PyExc_TypeError, "invalidate_va expected 4 positional arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *hierarchies = args[0], *op = args[1], *va = args[2], *asid = args[3];
    struct op_keys o = {.va = va, .asid = asid};
    uint64_t va_v = 0, asid_v = 0;
    int python = !PyLong_Check(va) || !PyLong_Check(asid);
    if (!python) {
        va_v = PyLong_AsUnsignedLongLong(va);
        if (va_v == (uint64_t)-1 && PyErr_Occurred()) {        /* negative or wider than 64 bits */
            PyErr_Clear();
            python = 1;
        }
        asid_v = PyLong_AsUnsignedLongLong(asid);
        if (asid_v == (uint64_t)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            python = 1;
        } else if (asid_v >> tag_bits)                         /* would spill out of the tag */
            python = 1;
    }
    struct cpu_tlbs *stack[REACH_ON_STACK];
    Py_ssize_t nh;
    struct cpu_tlbs **reach = reach_of(self, hierarchies, stack, &nh, &python);
    if (reach == NULL)
        return python ? PyObject_Vectorcall(python_fn, args, 4, NULL) : NULL;

    PyObject *result = NULL;
    long long n = 0;
    PyObject *scope = get(op, s_scope);
    if (scope == NULL)
        goto done;
    o.by_asid = scope == scope_va;
    Py_DECREF(scope);
    PyObject *last = get(op, s_last_level);
    if (last == NULL)
        goto done;
    int last_level = PyObject_IsTrue(last);
    Py_DECREF(last);
    if (last_level < 0)
        goto done;
    o.tables = !last_level;
    o.vpn12 = va_v >> 12;
    o.v2 = va_v >> 30;                      /* the L2- and L3-table regions: _region_shift */
    o.v3 = va_v >> 21;
    if ((o.ka = make_key(o.vpn12, 12, asid_v)) == NULL || (o.kg = make_key(o.vpn12, 12, global_tag_v)) == NULL)
        goto done;
    if (o.tables && o.by_asid
        && ((o.k2 = make_key(o.v2, 2, asid_v)) == NULL || (o.k3 = make_key(o.v3, 3, asid_v)) == NULL))
        goto done;
    /* mirrors `for h in hierarchies: for t in h._leaf_tlbs: ...; if tables: <walk cache>` */
    for (Py_ssize_t i = 0; i < nh; i++) {
        struct cpu_tlbs *c = reach[i];
        for (Py_ssize_t j = 0; j < c->nleaf; j++)
            if (leaf_tlb(&c->leaf[j], &o, &n) < 0)
                goto done;
        if (o.tables && walk_cache(&c->wc, &o, &n) < 0)
            goto done;
    }
    result = PyLong_FromLongLong(n);
done:
    reach_free(reach, stack);
    Py_XDECREF(o.ka);
    Py_XDECREF(o.kg);
    Py_XDECREF(o.k2);
    Py_XDECREF(o.k3);
    Py_XDECREF(o.leaf_tags);
    Py_XDECREF(o.wc_tags);
    return result;
}

/* ---------------------------------------------------------------- by ASID */

/* mirrors SetAssocTLB.invalidate(ASID) (_invalidate_asid inlined when no slices are held):
 * the entries of ASID tag `asid` leave every set, found through the per-ASID index */
static int
leaf_asid(struct part *p, PyObject *asid, long long *n)
{
    PyObject *t = p->t;
    if (fast_slot_add(p->stats, off_flush_ops, 1, NULL) < 0)
        return -1;
    PyObject *sb = get(t, s_slice_blocks);
    int slices = sb == NULL ? -1 : PyObject_IsTrue(sb);
    Py_XDECREF(sb);
    if (slices < 0)
        return -1;
    long long m = 0;
    if (slices) {                       /* slices held: SetAssocTLB._invalidate_asid itself */
        PyObject *r = PyObject_CallMethodOneArg(t, s_invalidate_asid, asid);
        if (r == NULL)
            return -1;
        m = PyLong_AsLongLong(r);
        Py_DECREF(r);
        if (m == -1 && PyErr_Occurred())
            return -1;
        goto counted;
    }
    /* d = self.by_tag.pop(asid, None); if not d: return 0 */
    PyObject *d = dict_pop(p->index, asid);
    if (d == NULL) {
        if (PyErr_Occurred())
            return -1;
        goto counted;
    }
    int rc = -1;
    PyObject *sc = NULL, *on_remove = NULL;
    if (!PyDict_CheckExact(d)) {
        PyErr_SetString(PyExc_TypeError, "_fast_tlbi: a by_tag entry must be a dict");
        goto done;
    }
    if ((sc = get(t, s_shift_count)) == NULL || (on_remove = get(t, s_on_remove)) == NULL)
        goto done;
    if (!PyList_CheckExact(sc)) {
        PyErr_SetString(PyExc_TypeError, "_fast_tlbi: shift_count must be a list");
        goto done;
    }
    int emptied = 0;
    Py_ssize_t pos = 0;
    PyObject *k, *e;
    while (PyDict_Next(d, &pos, &k, &e)) {          /* d is ours now: nothing else changes it */
        uint64_t kv = PyLong_AsUnsignedLongLongMask(k);     /* the set and the size: low bits */
        if (kv == (uint64_t)-1 && PyErr_Occurred())
            goto done;
        PyObject *s = pick_set(p->sets, p->mask, kv >> (tag_bits + 6));
        if (s == NULL || PyDict_DelItem(s, k) < 0)
            goto done;
        Py_ssize_t shift = (Py_ssize_t)((kv >> tag_bits) & 63);
        PyObject *cur = PyList_GetItem(sc, shift);
        long long c = cur == NULL ? -1 : PyLong_AsLongLong(cur);
        if (c == -1 && PyErr_Occurred())
            goto done;
        PyObject *nv = PyLong_FromLongLong(c - 1);
        if (nv == NULL || PyList_SetItem(sc, shift, nv) < 0)
            goto done;
        emptied |= c - 1 == 0;
        long long r;
        if (!PyObject_TypeCheck(e, translation_type)) {
            PyErr_SetString(PyExc_TypeError, "_fast_tlbi: a TLB entry is not a Translation");
            goto done;
        }
        if (fast_slot_add(e, off_refs, -1, &r) < 0)
            goto done;
        if (r == 0 && on_remove != Py_None) {
            PyObject *res = PyObject_CallOneArg(on_remove, e);
            if (res == NULL)
                goto done;
            Py_DECREF(res);
        }
    }
    if (emptied && call_method0(t, s_update_shifts) < 0)
        goto done;
    m = PyDict_GET_SIZE(d);
    rc = 0;
done:
    Py_XDECREF(sc);
    Py_XDECREF(on_remove);
    Py_DECREF(d);
    if (rc < 0)
        return -1;
counted:
    if (fast_slot_add(p->stats, off_flushed_entries, m, NULL) < 0)
        return -1;
    *n += m;
    return 0;
}

/* mirrors WalkCache.invalidate(ASID) with its _invalidate_asid inlined */
static int
walk_cache_asid(struct part *p, PyObject *asid, long long *n)
{
    PyObject *w = p->t;
    if (fast_slot_add(p->stats, off_flush_ops, 1, NULL) < 0)
        return -1;
    long long m = 0;
    PyObject *d = dict_pop(p->index, asid);
    if (d == NULL) {
        if (PyErr_Occurred())
            return -1;
    } else {
        int rc = -1;
        PyObject *lc = get(w, s_level_count);
        if (lc != NULL && PyDict_CheckExact(d) && PyList_CheckExact(lc)) {
            Py_ssize_t pos = 0;
            PyObject *k, *v;
            rc = 0;
            while (rc == 0 && PyDict_Next(d, &pos, &k, &v)) {
                uint64_t kv = PyLong_AsUnsignedLongLongMask(k);
                PyObject *s = kv == (uint64_t)-1 && PyErr_Occurred() ? NULL
                              : pick_set(p->sets, p->mask, kv >> (tag_bits + 6));
                Py_ssize_t level = (Py_ssize_t)((kv >> tag_bits) & 63);
                PyObject *cur = s == NULL || PyDict_DelItem(s, k) < 0 ? NULL : PyList_GetItem(lc, level);
                long long c = cur == NULL ? -1 : PyLong_AsLongLong(cur);
                PyObject *nv = cur == NULL || (c == -1 && PyErr_Occurred()) ? NULL : PyLong_FromLongLong(c - 1);
                rc = nv == NULL ? -1 : PyList_SetItem(lc, level, nv);     /* lc[level] -= 1 */
            }
            if (rc == 0)
                rc = update_levels(w);
            m = PyDict_GET_SIZE(d);
        } else if (lc != NULL)
            PyErr_SetString(PyExc_TypeError, "_fast_tlbi: by_asid entries must be dicts, level_count a list");
        Py_XDECREF(lc);
        Py_DECREF(d);
        if (rc < 0)
            return -1;
    }
    if (fast_slot_add(p->stats, off_flushed_entries, m, NULL) < 0)
        return -1;
    *n += m;
    return 0;
}

/* invalidate_asid(hierarchies, op, asid) -> entries removed; see tlb.py:invalidate_asid */
static PyObject *
Invalidator_asid(PyObject *callable, PyObject *const *args, Py_ssize_t nargs)
{
    Invalidator *self = (Invalidator *)callable;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "invalidate_asid expected 3 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *hierarchies = args[0], *op = args[1], *asid = args[2];
    PyObject *scope = get(op, s_scope), *last = scope == NULL ? NULL : get(op, s_last_level);
    int last_level = last == NULL ? -1 : PyObject_IsTrue(last);
    Py_XDECREF(last);
    Py_XDECREF(scope);
    if (last_level < 0)
        return NULL;
    int python = scope != scope_asid;
    struct cpu_tlbs *stack[REACH_ON_STACK];
    Py_ssize_t nh;
    struct cpu_tlbs **reach = reach_of(self, hierarchies, stack, &nh, &python);
    if (reach == NULL)
        return python ? PyObject_Vectorcall(python_asid_fn, args, 3, NULL) : NULL;
    long long n = 0;
    PyObject *result = NULL;
    /* mirrors TLBHierarchy.invalidate for the ASID scope, CPU by CPU */
    for (Py_ssize_t i = 0; i < nh; i++) {
        struct cpu_tlbs *c = reach[i];
        for (Py_ssize_t j = 0; j < c->nleaf; j++)
            if (leaf_asid(&c->leaf[j], asid, &n) < 0)
                goto done;
        if (!last_level && walk_cache_asid(&c->wc, asid, &n) < 0)
            goto done;
    }
    result = PyLong_FromLongLong(n);
done:
    reach_free(reach, stack);
    return result;
}

static PyMethodDef Invalidator_methods[] = {
    {"invalidate_asid", (PyCFunction)(void (*)(void))Invalidator_asid, METH_FASTCALL,
     "invalidate_asid(hierarchies, op, asid) -> int: emu/tlb.py:invalidate_asid, compiled."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject InvalidatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "emu._fast_tlbi.Invalidator",
    .tp_doc = PyDoc_STR("invalidate_va(hierarchies, op, va, asid) of one machine: emu/tlb.py:invalidate_va, compiled"),
    .tp_basicsize = sizeof(Invalidator),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Invalidator, vectorcall),
    .tp_new = Invalidator_new,
    .tp_dealloc = (destructor)Invalidator_dealloc,
    .tp_traverse = (traverseproc)Invalidator_traverse,
    .tp_clear = (inquiry)Invalidator_clear,
    .tp_call = PyVectorcall_Call,
    .tp_methods = Invalidator_methods,
};


/* configure(*, only_4k, tag_bits, global_tag, scope_va, scope_asid, python, python_asid,
 * stats, translation): what tlb.py shares */
static PyObject *
configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"only_4k", "tag_bits", "global_tag", "scope_va", "scope_asid", "python",
                             "python_asid", "stats", "translation", NULL};
    PyObject *o4k, *gt, *sva, *sas, *py, *pya;
    PyTypeObject *st, *tt;
    unsigned int tb;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OIOOOOOO!O!:configure", kwlist, &o4k, &tb, &gt, &sva, &sas,
                                     &py, &pya, &PyType_Type, &st, &PyType_Type, &tt))
        return NULL;
    Py_INCREF(sas);
    Py_INCREF(pya);
    Py_XSETREF(scope_asid, sas);
    Py_XSETREF(python_asid_fn, pya);
    if ((off_flush_ops = fast_slot_offset((PyObject *)st, "flush_ops")) < 0
        || (off_flushed_entries = fast_slot_offset((PyObject *)st, "flushed_entries")) < 0
        || (off_refs = fast_slot_offset((PyObject *)tt, "refs")) < 0)
        return NULL;
    Py_INCREF(st);
    Py_INCREF(tt);
    Py_XSETREF(stats_type, st);
    Py_XSETREF(translation_type, tt);
    if (tb < 1 || tb > 32) {
        PyErr_SetString(PyExc_ValueError, "configure: tag_bits must be in 1..32");
        return NULL;
    }
    uint64_t g = PyLong_AsUnsignedLongLong(gt);
    if (g == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    if (g >> tb) {
        PyErr_SetString(PyExc_ValueError, "configure: global_tag does not fit in tag_bits");
        return NULL;
    }
    if (!PyCallable_Check(py)) {
        PyErr_SetString(PyExc_TypeError, "configure: python must be callable");
        return NULL;
    }
    Py_INCREF(o4k);
    Py_INCREF(gt);
    Py_INCREF(sva);
    Py_INCREF(py);
    Py_XSETREF(only_4k, o4k);
    Py_XSETREF(global_tag, gt);
    Py_XSETREF(scope_va, sva);
    Py_XSETREF(python_fn, py);
    /* WalkCache._update_levels's table, where tlb.py's invalidate_va finds it */
    PyObject *lp = NULL;
    if (PyFunction_Check(py)) {
        lp = PyDict_GetItemWithError(PyFunction_GetGlobals(py), s_levels_present);
        if (lp == NULL && PyErr_Occurred())
            return NULL;
        if (lp != NULL && !(PyList_CheckExact(lp) && PyList_GET_SIZE(lp) == 8))
            lp = NULL;
    }
    Py_XINCREF(lp);
    Py_XSETREF(levels_present, lp);
    tag_bits = tb;
    global_tag_v = g;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "configure(*, only_4k, tag_bits, global_tag, scope_va, scope_asid, python, python_asid, stats, "
     "translation): the constants "
     "and types of emu/tlb.py, and its invalidate_va (the fallback for what the C does not handle)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fast_tlbi",
    "The compiled twin of emu/tlb.py:invalidate_va (a completed by-VA TLBI on every CPU it reaches).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fast_tlbi(void)
{
    struct { PyObject **slot; const char *name; } names[] = {
        {&s_leaf_tlbs, "_leaf_tlbs"}, {&s_walk_cache, "walk_cache"}, {&s_stats, "stats"},
        {&s_flush_ops, "flush_ops"}, {&s_flushed_entries, "flushed_entries"}, {&s_shifts, "shifts"},
        {&s_sets, "sets"}, {&s_set_mask, "set_mask"}, {&s_by_tag, "by_tag"},
        {&s_shift_count, "shift_count"}, {&s_update_shifts, "_update_shifts"}, {&s_refs, "refs"},
        {&s_on_remove, "on_remove"}, {&s_invalidate_va, "_invalidate_va"}, {&s_levels, "levels"},
        {&s_by_asid, "by_asid"}, {&s_level_count, "level_count"}, {&s_update_levels, "_update_levels"},
        {&s_scope, "scope"}, {&s_last_level, "last_level"}, {&s_levels_present, "_LEVELS_PRESENT"},
        {&s_slice_blocks, "slice_blocks"}, {&s_invalidate_asid, "_invalidate_asid"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL)
            return NULL;
    if (empty_tuple == NULL && (empty_tuple = PyTuple_New(0)) == NULL)
        return NULL;
    if (zero == NULL && (zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    if (PyType_Ready(&InvalidatorType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&InvalidatorType);
    if (PyModule_AddObject(m, "Invalidator", (PyObject *)&InvalidatorType) < 0) {
        Py_DECREF(&InvalidatorType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
