/*
 * Slots of the model's dataclass(slots=True) records (Translation, TLBStats, Regime,
 * WalkCacheEntry), read and stored at their offsets: what getattr and setattr do for a
 * slot, without the attribute protocol around it. Shared by emu/_fast_translate.c and
 * emu/_fast_tlbi.c. An offset comes from the class's member descriptor and is checked to
 * be an object slot (T_OBJECT_EX) when an extension object is made.
 */
#ifndef ARMMU_FAST_SLOTS_H
#define ARMMU_FAST_SLOTS_H

#include <Python.h>
#include <structmember.h>           /* PyMemberDescrObject, T_OBJECT_EX */

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* the offset of slot `name` of `type`; -1 with TypeError if it is not a writable object slot */
static Py_ssize_t fast_slot_offset(PyObject *type, const char *name)
{
    PyObject *d = PyObject_GetAttrString(type, name);
    if (d == NULL)
        return -1;
    Py_ssize_t off = -1;
    if (Py_IS_TYPE(d, &PyMemberDescr_Type) && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX
        && !(((PyMemberDescrObject *)d)->d_member->flags & READONLY))
        off = ((PyMemberDescrObject *)d)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "%s is not a slot of %R", name, type);
    Py_DECREF(d);
    return off;
}

/* a slot holding an int, read */
static int fast_slot_ll(PyObject *o, Py_ssize_t off, long long *out)
{
    PyObject *v = SLOT(o, off);
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "an unset slot");
        return -1;
    }
    *out = PyLong_AsLongLong(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* a slot holding an int: += delta (the TLBStats counters, Translation.refs); *out (if
 * given) the new value */
static int fast_slot_add(PyObject *o, Py_ssize_t off, long long delta, long long *out)
{
    PyObject *old = SLOT(o, off);
    long long v;
    if (fast_slot_ll(o, off, &v) < 0)
        return -1;
    PyObject *nv = PyLong_FromLongLong(v + delta);
    if (nv == NULL)
        return -1;
    SLOT(o, off) = nv;
    Py_DECREF(old);
    if (out != NULL)
        *out = v + delta;
    return 0;
}

#endif
