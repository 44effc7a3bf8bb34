/* The compiled twin of emu/tlb.py:invalidate_va: one completed by-VA TLBI (VA or VAA
 * scope) applied to the TLBs of every CPU it reaches.
 *
 * It works on the same Python objects as the Python function (each SetAssocTLB's dict
 * sets, by_tag index, shift_count, stats, entry refs and on_remove; each WalkCache's sets,
 * by_asid index, level_count, levels and stats), with exactly the same effects in the same
 * order, and reads each attribute where the Python does (a callback may rebind one). What
 * the Python's inlined fast path does not handle either (sizes other than 4 KB held, VAA
 * scope, a walk cache holding L1 tables) goes to the same Python methods the Python calls:
 * t._invalidate_va, t._update_shifts, t.on_remove(e), w._invalidate_va; WalkCache.
 * _update_levels (one table lookup) is mirrored here. Operands whose keys cannot be built
 * from 64-bit arithmetic (a VA outside [0, 2^64), an ASID wider than the tag) go to the
 * Python invalidate_va whole.
 *
 * Keys, as in tlb.py: ((vpn << 6 | shift) << TAG_BITS) | tag, a Python int that may be wider
 * than 64 bits (a kernel VA's 4 KB vpn has 52 bits).
 *
 * Cost: the work is Python object operations (dict lookups and deletions, int counters,
 * the on_remove calls, freeing the entries), so the C saves the interpreter around them,
 * not them. The largest saving over the attribute protocol: slot counters updated through
 * their member descriptors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>          /* PyMember_GetOne, PyMember_SetOne */
#include <stdint.h>

/* shared with tlb.py, set by configure() */
static PyObject *only_4k;          /* tlb._ONLY_4K: SetAssocTLB.shifts when only 4 KB entries are held */
static PyObject *global_tag;       /* tlb.GLOBAL_TAG */
static PyObject *scope_va;         /* Scope.VA */
static PyObject *python_fn;        /* tlb.invalidate_va, for operands handled only there */
static PyObject *levels_present;   /* tlb._LEVELS_PRESENT (from python_fn's module), or NULL */
static unsigned tag_bits;
static uint64_t global_tag_v;

/* attribute names, interned once at module init */
static PyObject *s_leaf_tlbs, *s_walk_cache, *s_stats, *s_flush_ops, *s_flushed_entries,
    *s_shifts, *s_sets, *s_set_mask, *s_by_tag, *s_shift_count, *s_update_shifts, *s_refs,
    *s_on_remove, *s_invalidate_va, *s_levels, *s_by_asid, *s_level_count, *s_update_levels,
    *s_scope, *s_last_level, *s_levels_present;
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

/* The counters (TLBStats fields, Translation.refs) are slots: they are read and written
 * through their member descriptor (PyMember_GetOne / PyMember_SetOne), found once per class,
 * which is what getattr and setattr do for a slot, without the attribute protocol around. */
#define MEMBERS 8
static struct { PyTypeObject *type; PyObject *name; PyObject *descr; } members[MEMBERS];

/* the slot `name` of `type`, NULL (no error set) if it is not a plain member slot */
static PyMemberDef *
member_of(PyTypeObject *type, PyObject *name)
{
    int i;
    for (i = 0; i < MEMBERS && members[i].type != NULL; i++)
        if (members[i].type == type && members[i].name == name)
            return members[i].descr == NULL ? NULL : ((PyMemberDescrObject *)members[i].descr)->d_member;
    PyObject *d = PyObject_GetAttr((PyObject *)type, name);
    if (d == NULL)
        PyErr_Clear();                      /* getattr on the instance will say why */
    else if (!Py_IS_TYPE(d, &PyMemberDescr_Type) || (((PyMemberDescrObject *)d)->d_member->flags & READONLY))
        Py_CLEAR(d);
    if (i == MEMBERS) {
        Py_XDECREF(d);                      /* no room to remember it: the attribute protocol */
        return NULL;
    }
    Py_INCREF(type);
    members[i].type = type;
    members[i].name = name;                 /* interned, immortal for this module's life */
    members[i].descr = d;
    return d == NULL ? NULL : ((PyMemberDescrObject *)d)->d_member;
}

/* obj.name += delta (a Python int attribute); *out (if given) the new value */
static int
attr_add_out(PyObject *obj, PyObject *name, long long delta, long long *out)
{
    PyMemberDef *m = member_of(Py_TYPE(obj), name);
    PyObject *v = m != NULL ? PyMember_GetOne((const char *)obj, m) : PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    PyObject *r = NULL;
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow && !(x == -1 && PyErr_Occurred()))
            r = PyLong_FromLongLong(x + delta);
    }
    if (r == NULL && !PyErr_Occurred()) {       /* not a small exact int: Python's + */
        PyObject *d = PyLong_FromLongLong(delta);
        if (d != NULL) {
            r = PyNumber_InPlaceAdd(v, d);
            Py_DECREF(d);
        }
    }
    Py_DECREF(v);
    if (r == NULL)
        return -1;
    if (out != NULL && (*out = PyLong_AsLongLong(r)) == -1 && PyErr_Occurred()) {
        Py_DECREF(r);
        return -1;
    }
    int rc = m != NULL ? PyMember_SetOne((char *)obj, m, r) : PyObject_SetAttr(obj, name, r);
    Py_DECREF(r);
    return rc;
}

static int
attr_add(PyObject *obj, PyObject *name, long long delta)
{
    return attr_add_out(obj, name, delta, NULL);
}

/* obj.stats.name += delta */
static int
stat_add(PyObject *obj, PyObject *name, long long delta)
{
    PyObject *stats = get(obj, s_stats);
    if (stats == NULL)
        return -1;
    int rc = attr_add(stats, name, delta);
    Py_DECREF(stats);
    return rc;
}

/* obj.stats.flushed_entries += m, m the int a Python method returned */
static int
stat_add_obj(PyObject *obj, PyObject *m)
{
    PyObject *stats = get(obj, s_stats);
    if (stats == NULL)
        return -1;
    PyObject *v = PyObject_GetAttr(stats, s_flushed_entries);
    int rc = -1;
    if (v != NULL) {
        PyObject *r = PyNumber_InPlaceAdd(v, m);
        Py_DECREF(v);
        if (r != NULL) {
            rc = PyObject_SetAttr(stats, s_flushed_entries, r);
            Py_DECREF(r);
        }
    }
    Py_DECREF(stats);
    return rc;
}

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

/* obj.sets (a new reference to a list) and obj.set_mask, read once as the Python does */
static int
sets_of(PyObject *obj, PyObject **sets, uint64_t *mask)
{
    PyObject *maskobj = get(obj, s_set_mask);
    if (maskobj == NULL)
        return -1;
    *mask = PyLong_AsUnsignedLongLong(maskobj);
    Py_DECREF(maskobj);
    if (*mask == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    *sets = get(obj, s_sets);
    if (*sets == NULL)
        return -1;
    if (!PyList_CheckExact(*sets)) {
        PyErr_SetString(PyExc_TypeError, "_fast_tlbi: a TLB's sets must be a list");
        Py_CLEAR(*sets);
        return -1;
    }
    return 0;
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

/* mirrors `d = index[tag]; del d[k]; if not d: del index[tag]` (by_tag, by_asid), with
 * owner.<index_name> */
static int
unindex(PyObject *owner, PyObject *index_name, PyObject *tag, PyObject *k)
{
    PyObject *index = get(owner, index_name);
    if (index == NULL)
        return -1;
    int rc = -1;
    if (PyDict_CheckExact(index)) {
        /* dicts of dicts, as tlb.py builds them: the same operations without the dispatch */
        PyObject *d = PyDict_GetItemWithError(index, tag);
        if (d == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, tag);
            Py_DECREF(index);
            return -1;
        }
        if (PyDict_CheckExact(d)) {
            Py_INCREF(d);
            if (PyDict_DelItem(d, k) == 0)
                rc = PyDict_GET_SIZE(d) ? 0 : PyDict_DelItem(index, tag);
            Py_DECREF(d);
            Py_DECREF(index);
            return rc;
        }
    }
    PyObject *d = PyObject_GetItem(index, tag);
    if (d != NULL) {
        if (PyObject_DelItem(d, k) == 0) {
            int full = PyObject_IsTrue(d);
            if (full == 0)
                rc = PyObject_DelItem(index, tag);
            else if (full > 0)
                rc = 0;
        }
        Py_DECREF(d);
    }
    Py_DECREF(index);
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
drop_4k(PyObject *t, PyObject *s, PyObject *k, PyObject *tag)
{
    PyObject *e = dict_pop(s, k);
    if (e == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (unindex(t, s_by_tag, tag, k) < 0 || stat_add(t, s_flushed_entries, 1) < 0)
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
    long long r;                        /* e.refs -= 1, then read back (a slot) */
    if (attr_add_out(e, s_refs, -1, &r) < 0)
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
add_returned(PyObject *x, PyObject *m, long long *n)
{
    int truth = PyObject_IsTrue(m);
    if (truth <= 0)
        return truth;
    if (stat_add_obj(x, m) < 0)
        return -1;
    long long v = PyLong_AsLongLong(m);
    if (v == -1 && PyErr_Occurred())
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

/* mirrors tlb.py:invalidate_va, the loop body for one leaf TLB t */
static int
leaf_tlb(PyObject *t, struct op_keys *o, long long *n)
{
    if (stat_add(t, s_flush_ops, 1) < 0)
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
        int rc = add_returned(t, m, n);
        Py_DECREF(m);
        return rc;
    }
    /* the 4 KB unrolled case */
    PyObject *sets;
    uint64_t mask;
    if (sets_of(t, &sets, &mask) < 0)
        return -1;
    PyObject *s = pick_set(sets, mask, o->vpn12);
    Py_XINCREF(s);                      /* held: on_remove could change the list */
    Py_DECREF(sets);
    if (s == NULL)
        return -1;
    int r1 = drop_4k(t, s, o->ka, o->asid);
    int r2 = r1 < 0 ? -1 : drop_4k(t, s, o->kg, global_tag);
    Py_DECREF(s);
    if (r2 < 0)
        return -1;
    *n += r1 + r2;
    return 0;
}

/* mirrors tlb.py:invalidate_va, the walk-cache part for hierarchy h
 * with WalkCache._dropped and _uncounted inlined for the by-ASID case */
static int
walk_cache(PyObject *h, struct op_keys *o, long long *n)
{
    PyObject *w = get(h, s_walk_cache);
    if (w == NULL)
        return -1;
    int rc = -1;
    PyObject *levels = NULL, *sets = NULL;
    uint64_t mask;
    if (stat_add(w, s_flush_ops, 1) < 0)
        goto done;
    levels = get(w, s_levels);
    if (levels == NULL)
        goto done;
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
        rc = add_returned(w, m, n);
        Py_DECREF(m);
        goto done;
    }
    if (sets_of(w, &sets, &mask) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < nl; i++) {
        long level = PyLong_AsLong(PyTuple_GET_ITEM(levels, i));
        if (level == -1 && PyErr_Occurred())
            goto done;
        if (level != 2 && level != 3) {
            PyErr_Format(PyExc_ValueError, "_fast_tlbi: walk-cache level %ld", level);
            goto done;
        }
        PyObject *k = level == 2 ? o->k2 : o->k3;
        PyObject *s = pick_set(sets, mask, level == 2 ? o->v2 : o->v3);
        if (s == NULL)
            goto done;
        PyObject *e = dict_pop(s, k);
        if (e == NULL) {
            if (PyErr_Occurred())
                goto done;
            continue;
        }
        Py_DECREF(e);
        if (unindex(w, s_by_asid, o->asid, k) < 0)
            goto done;
        long long c;
        if (count_down(w, s_level_count, level, &c) < 0 || (c == 0 && update_levels(w) < 0))
            goto done;
        if (stat_add(w, s_flushed_entries, 1) < 0)
            goto done;
        *n += 1;
    }
    rc = 0;
done:
    Py_XDECREF(sets);
    Py_XDECREF(levels);
    Py_DECREF(w);
    return rc;
}

/* one CPU's TLBs: mirrors the body of `for h in hierarchies` in tlb.py:invalidate_va */
static int
hierarchy(PyObject *h, struct op_keys *o, long long *n)
{
    PyObject *leaf = get(h, s_leaf_tlbs);
    PyObject *leaf_seq = leaf == NULL ? NULL : PySequence_Fast(leaf, "_fast_tlbi: _leaf_tlbs must be a sequence");
    Py_XDECREF(leaf);
    int rc = leaf_seq == NULL ? -1 : 0;
    for (Py_ssize_t j = 0; rc == 0 && j < PySequence_Fast_GET_SIZE(leaf_seq); j++) {
        PyObject *t = PySequence_Fast_GET_ITEM(leaf_seq, j);
        Py_INCREF(t);                   /* held while used: a callback could change a list */
        rc = leaf_tlb(t, o, n);
        Py_DECREF(t);
    }
    Py_XDECREF(leaf_seq);
    if (rc == 0 && o->tables)
        rc = walk_cache(h, o, n);
    return rc;
}

/* invalidate_va(hierarchies, op, va, asid) -> entries removed; see tlb.py:invalidate_va */
static PyObject *
invalidate_va(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "invalidate_va expected 4 arguments, got %zd", nargs);
        return NULL;
    }
    if (python_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fast_tlbi.configure() was not called");
        return NULL;
    }
    PyObject *hierarchies = args[0], *op = args[1], *va = args[2], *asid = args[3];
    struct op_keys o = {.va = va, .asid = asid};
    uint64_t va_v = 0, asid_v = 0;
    int python = !PyLong_Check(va) || !PyLong_Check(asid)
        || !(PyList_CheckExact(hierarchies) || PyTuple_CheckExact(hierarchies));
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
    if (python)
        return PyObject_Vectorcall(python_fn, args, 4, NULL);

    PyObject *scope = get(op, s_scope);
    if (scope == NULL)
        return NULL;
    o.by_asid = scope == scope_va;
    Py_DECREF(scope);
    PyObject *last = get(op, s_last_level);
    if (last == NULL)
        return NULL;
    int last_level = PyObject_IsTrue(last);
    Py_DECREF(last);
    if (last_level < 0)
        return NULL;
    o.tables = !last_level;
    o.vpn12 = va_v >> 12;
    o.v2 = va_v >> 30;                      /* the L2- and L3-table regions: _region_shift */
    o.v3 = va_v >> 21;

    PyObject *result = NULL;
    long long n = 0;
    if ((o.ka = make_key(o.vpn12, 12, asid_v)) == NULL || (o.kg = make_key(o.vpn12, 12, global_tag_v)) == NULL)
        goto done;
    if (o.tables && o.by_asid
        && ((o.k2 = make_key(o.v2, 2, asid_v)) == NULL || (o.k3 = make_key(o.v3, 3, asid_v)) == NULL))
        goto done;
    /* a list or tuple: its items are read as Python's `for h in hierarchies` would */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(hierarchies); i++) {
        PyObject *h = PySequence_Fast_GET_ITEM(hierarchies, i);
        Py_INCREF(h);                   /* held while used: a callback could change the list */
        int rc = hierarchy(h, &o, &n);
        Py_DECREF(h);
        if (rc < 0)
            goto done;
    }
    result = PyLong_FromLongLong(n);
done:
    Py_XDECREF(o.ka);
    Py_XDECREF(o.kg);
    Py_XDECREF(o.k2);
    Py_XDECREF(o.k3);
    Py_XDECREF(o.leaf_tags);
    Py_XDECREF(o.wc_tags);
    return result;
}

/* configure(*, only_4k, tag_bits, global_tag, scope_va, python): what tlb.py shares */
static PyObject *
configure(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"only_4k", "tag_bits", "global_tag", "scope_va", "python", NULL};
    PyObject *o4k, *gt, *sva, *py;
    unsigned int tb;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OIOOO:configure", kwlist, &o4k, &tb, &gt, &sva, &py))
        return NULL;
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
     "configure(*, only_4k, tag_bits, global_tag, scope_va, python): the constants of emu/tlb.py "
     "and its invalidate_va (the fallback for operands outside 64-bit keys)."},
    {"invalidate_va", (PyCFunction)(void (*)(void))invalidate_va, METH_FASTCALL,
     "invalidate_va(hierarchies, op, va, asid) -> int: emu/tlb.py:invalidate_va, compiled."},
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
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL)
            return NULL;
    if (empty_tuple == NULL && (empty_tuple = PyTuple_New(0)) == NULL)
        return NULL;
    if (zero == NULL && (zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
