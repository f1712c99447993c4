/* contactsync.wire._phpform_c: the hot paths of contactsync.wire.phpform in C.
 *
 * The pure-Python module stays the reference: each function here follows its Python twin step by
 * step (named in the comments), and tests/unit/test_phpform_accel.py compares both on generated
 * hostile bodies. Whatever is rare or awkward (limits in "raise" mode, odd container or key types)
 * is not handled here: the function returns None and the caller runs the Python code instead.
 *
 * decode() reads untrusted bodies, so: every buffer is sized from the body before it is written,
 * every index is checked against an explicit length, every allocation and C-API result is checked,
 * and references are owned or borrowed as commented.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define PHP_INT_MAX INT64_MAX

/* --- a growable byte buffer ------------------------------------------------------------------ */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_reserve(Buf *buf, Py_ssize_t extra) {
    if (extra < 0 || buf->len > PY_SSIZE_T_MAX - extra) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t need = buf->len + extra;
    if (need <= buf->cap) {
        return 0;
    }
    Py_ssize_t cap = buf->cap > 0 ? buf->cap : 256;
    while (cap < need) {
        cap = cap > PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    }
    char *grown = PyMem_Realloc(buf->data, (size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buf->data = grown;
    buf->cap = cap;
    return 0;
}

static int buf_put(Buf *buf, const char *bytes, Py_ssize_t size) {
    if (size <= 0) {
        return 0;
    }
    if (buf_reserve(buf, size) < 0) {
        return -1;
    }
    memcpy(buf->data + buf->len, bytes, (size_t)size);
    buf->len += size;
    return 0;
}

/* --- encode: _walk / _encode_values ------------------------------------------------------------ */

static const char HEX[] = "0123456789ABCDEF";
static unsigned char SAFE_1738[256]; /* filled by the module init: A-Za-z0-9-_. */
static unsigned char SAFE_3986[256]; /* the same and '~' */

/* php_url_encode (space is '+') or php_raw_url_encode (space is %20) of ``size`` bytes. */
static int buf_escape(Buf *buf, const unsigned char *bytes, Py_ssize_t size, int rfc3986) {
    if (size <= 0) {
        return 0;
    }
    if (size > PY_SSIZE_T_MAX / 3) {
        PyErr_NoMemory();
        return -1;
    }
    if (buf_reserve(buf, 3 * size) < 0) {
        return -1;
    }
    const unsigned char *safe = rfc3986 ? SAFE_3986 : SAFE_1738;
    char *out = buf->data + buf->len;
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char byte = bytes[i];
        if (safe[byte]) {
            *out++ = (char)byte;
        } else if (byte == ' ' && !rfc3986) {
            *out++ = '+';
        } else {
            *out++ = '%';
            *out++ = HEX[byte >> 4];
            *out++ = HEX[byte & 15];
        }
    }
    buf->len = out - buf->data;
    return 0;
}

/* The UTF-8 bytes of a str, bytes that are not UTF-8 as surrogateescape code points (_latin).
 * When a new bytes object had to be made, *owner holds it (a new reference) and the caller frees it. */
static const char *str_bytes(PyObject *text, Py_ssize_t *size, PyObject **owner) {
    *owner = NULL;
    if (PyUnicode_READY(text) < 0) {
        return NULL;
    }
    if (PyUnicode_IS_ASCII(text)) {
        *size = PyUnicode_GET_LENGTH(text);
        return (const char *)PyUnicode_DATA(text);
    }
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, size);
    if (utf8 != NULL) {
        return utf8;
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        return NULL;
    }
    PyErr_Clear(); /* lone surrogates: surrogateescape gives the bytes they stand for, or raises */
    PyObject *raw = PyUnicode_AsEncodedString(text, "utf-8", "surrogateescape");
    if (raw == NULL) {
        return NULL;
    }
    *owner = raw;
    *size = PyBytes_GET_SIZE(raw);
    return PyBytes_AS_STRING(raw);
}

static int buf_escape_str(Buf *buf, PyObject *text, int rfc3986) {
    PyObject *owner;
    Py_ssize_t size;
    const char *bytes = str_bytes(text, &size, &owner);
    if (bytes == NULL) {
        return -1;
    }
    int status = buf_escape(buf, (const unsigned char *)bytes, size, rfc3986);
    Py_XDECREF(owner);
    return status;
}

/* str(number) for a Python int: digits written directly when it fits in 64 bits. */
static int buf_int(Buf *buf, PyObject *number) {
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow == 0) {
        char digits[32];
        int size = snprintf(digits, sizeof digits, "%lld", value);
        if (size < 0 || (size_t)size >= sizeof digits) {
            PyErr_SetString(PyExc_SystemError, "integer formatting failed");
            return -1;
        }
        return buf_put(buf, digits, size);
    }
    PyObject *text = PyNumber_ToBase(number, 10);
    if (text == NULL) {
        return -1;
    }
    int status = buf_escape_str(buf, text, 0); /* digits and '-' only: nothing to escape */
    Py_DECREF(text);
    return status;
}

enum { WALK_ERROR = -1, WALK_OK = 0, WALK_FALLBACK = 1 };

typedef struct {
    Buf out;           /* the body so far */
    Buf name;          /* the encoded name of the current node: a stack of "%5Bkey%5D" parts */
    int rfc3986;
    PyObject *php_float; /* borrowed: phpform.php_float */
    int depth;           /* containers entered; deeper than MAX_DEPTH is left to Python */
} Encoder;

/* A raised sys.setrecursionlimit() must not let data recurse this C code off its stack. */
#define MAX_DEPTH 2000

/* _key(): str, int (bool too) and bytes keys; anything else is the Python path's TypeError. */
static int put_key(Encoder *enc, PyObject *key, Py_ssize_t index) {
    if (key == NULL) {
        char digits[32];
        int size = snprintf(digits, sizeof digits, "%zd", index);
        if (size < 0 || (size_t)size >= sizeof digits) {
            PyErr_SetString(PyExc_SystemError, "index formatting failed");
            return WALK_ERROR;
        }
        return buf_put(&enc->name, digits, size);
    }
    if (PyUnicode_Check(key)) {
        return buf_escape_str(&enc->name, key, enc->rfc3986);
    }
    if (PyLong_CheckExact(key) || PyBool_Check(key)) { /* subclasses may redefine __int__ */
        return buf_int(&enc->name, key);
    }
    if (PyBytes_CheckExact(key)) {
        return buf_escape(&enc->name, (const unsigned char *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                          enc->rfc3986);
    }
    return WALK_FALLBACK;
}

/* One "name=" in front of a leaf's value. */
static int put_name(Encoder *enc) {
    if (enc->out.len > 0 && buf_put(&enc->out, "&", 1) < 0) {
        return -1;
    }
    if (buf_put(&enc->out, enc->name.data, enc->name.len) < 0) {
        return -1;
    }
    return buf_put(&enc->out, "=", 1);
}

static int walk(Encoder *enc, PyObject *node, int top);

/* "name=value" for a leaf: a str, the digits of an int, or raw bytes (exactly one is given). */
static int put_leaf(Encoder *enc, PyObject *text, PyObject *number, const char *bytes, Py_ssize_t size) {
    if (put_name(enc) < 0) {
        return WALK_ERROR;
    }
    int status;
    if (text != NULL) {
        status = buf_escape_str(&enc->out, text, enc->rfc3986);
    } else if (number != NULL) {
        status = buf_int(&enc->out, number);
    } else {
        status = buf_escape(&enc->out, (const unsigned char *)bytes, size, enc->rfc3986);
    }
    return status < 0 ? WALK_ERROR : WALK_OK;
}

/* php_float(value) as a leaf. */
static int put_float(Encoder *enc, PyObject *value) {
    PyObject *text = PyObject_CallOneArg(enc->php_float, value);
    if (text == NULL) {
        return WALK_ERROR;
    }
    int status = WALK_ERROR;
    if (PyUnicode_Check(text)) {
        status = put_leaf(enc, text, NULL, NULL, 0);
    } else {
        PyErr_SetString(PyExc_TypeError, "php_float must return str");
    }
    Py_DECREF(text);
    return status;
}

/* One entry of a container: its name, then its leaf or its children. */
static int walk_item(Encoder *enc, PyObject *key, Py_ssize_t index, PyObject *value, int top) {
    Py_ssize_t mark = enc->name.len;
    if (!top && buf_put(&enc->name, "%5B", 3) < 0) {
        return WALK_ERROR;
    }
    int status = put_key(enc, key, index);
    if (status != WALK_OK) {
        return status;
    }
    if (!top && buf_put(&enc->name, "%5D", 3) < 0) {
        return WALK_ERROR;
    }
    if (PyUnicode_Check(value)) {
        status = put_leaf(enc, value, NULL, NULL, 0);
    } else if (PyBool_Check(value)) {
        status = put_leaf(enc, NULL, NULL, value == Py_True ? "1" : "0", 1);
    } else if (PyLong_CheckExact(value)) {
        status = put_leaf(enc, NULL, value, NULL, 0);
    } else if (value == Py_None) {
        status = WALK_OK;
    } else if (PyDict_CheckExact(value) || PyList_CheckExact(value) || PyTuple_CheckExact(value)) {
        status = walk(enc, value, 0);
    } else if (PyFloat_CheckExact(value)) {
        status = put_float(enc, value);
    } else if (PyBytes_CheckExact(value)) {
        status = put_leaf(enc, NULL, NULL, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
    } else {
        status = WALK_FALLBACK; /* other mappings, sequences and scalars: the Python path decides */
    }
    enc->name.len = mark;
    return status;
}

/* _walk over an exact dict, list or tuple; a dict's entries are held while they are encoded. */
static int walk(Encoder *enc, PyObject *node, int top) {
    if (enc->depth >= MAX_DEPTH) {
        return WALK_FALLBACK;
    }
    if (Py_EnterRecursiveCall(" while form-encoding")) {
        return WALK_ERROR;
    }
    enc->depth++;
    int status = WALK_OK;
    if (PyDict_CheckExact(node)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (status == WALK_OK && PyDict_Next(node, &pos, &key, &value)) {
            Py_INCREF(key);
            Py_INCREF(value);
            status = walk_item(enc, key, 0, value, top);
            Py_DECREF(key);
            Py_DECREF(value);
        }
    } else {
        /* a list may change size if php_float() runs other threads: read its length every time */
        for (Py_ssize_t i = 0; status == WALK_OK; i++) {
            PyObject *item;
            if (PyList_CheckExact(node)) {
                if (i >= PyList_GET_SIZE(node)) {
                    break;
                }
                item = PyList_GET_ITEM(node, i);
            } else {
                if (i >= PyTuple_GET_SIZE(node)) {
                    break;
                }
                item = PyTuple_GET_ITEM(node, i);
            }
            Py_INCREF(item);
            status = walk_item(enc, NULL, i, item, top);
            Py_DECREF(item);
        }
    }
    enc->depth--;
    Py_LeaveRecursiveCall();
    return status;
}

/* encode(data, rfc3986, php_float) -> str, or None when the Python path must run. */
static PyObject *phpform_encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encode() takes 3 arguments");
        return NULL;
    }
    PyObject *data = args[0];
    if (!PyDict_CheckExact(data) && !PyList_CheckExact(data) && !PyTuple_CheckExact(data)) {
        Py_RETURN_NONE;
    }
    int rfc3986 = PyObject_IsTrue(args[1]);
    if (rfc3986 < 0) {
        return NULL;
    }
    if (!PyCallable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "php_float must be callable");
        return NULL;
    }
    Encoder enc = {{NULL, 0, 0}, {NULL, 0, 0}, rfc3986, args[2], 0};
    int status = walk(&enc, data, 1);
    PyObject *result = NULL;
    if (status == WALK_OK) {
        result = PyUnicode_DecodeASCII(enc.out.data != NULL ? enc.out.data : "", enc.out.len, "strict");
    } else if (status == WALK_FALLBACK) {
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(enc.out.data);
    PyMem_Free(enc.name.data);
    return result;
}

/* --- decode: _pieces / _register / _store / _append --------------------------------------------- */

/* PHP's next free index of the arrays that '[]' appended to (_Nexts), an open-addressing table
 * keyed by the dict's address. Each entry owns a reference, so no address is reused while decoding. */
typedef struct {
    PyObject *table; /* owned; NULL marks an empty slot */
    int64_t next;
} NextSlot;

typedef struct {
    NextSlot *slots;
    Py_ssize_t cap; /* 0 or a power of two */
    Py_ssize_t used;
} Nexts;

static size_t slot_hash(PyObject *table, Py_ssize_t cap) {
    uint64_t h = (uint64_t)(uintptr_t)table;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)(h & (uint64_t)(cap - 1));
}

static NextSlot *nexts_find(Nexts *nexts, PyObject *table) {
    if (nexts->used == 0) {
        return NULL;
    }
    size_t mask = (size_t)(nexts->cap - 1);
    for (size_t i = slot_hash(table, nexts->cap);; i = (i + 1) & mask) {
        if (nexts->slots[i].table == table) {
            return &nexts->slots[i];
        }
        if (nexts->slots[i].table == NULL) {
            return NULL;
        }
    }
}

/* Adds a table that is not in ``nexts`` yet (the table stays at most half full). */
static int nexts_add(Nexts *nexts, PyObject *table, int64_t next) {
    if ((nexts->used + 1) * 2 > nexts->cap) {
        if (nexts->cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(NextSlot)) {
            PyErr_NoMemory();
            return -1;
        }
        Py_ssize_t cap = nexts->cap > 0 ? nexts->cap * 2 : 16;
        NextSlot *slots = PyMem_Calloc((size_t)cap, sizeof(NextSlot));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t j = 0; j < nexts->cap; j++) {
            if (nexts->slots[j].table != NULL) {
                size_t i = slot_hash(nexts->slots[j].table, cap);
                while (slots[i].table != NULL) {
                    i = (i + 1) & (size_t)(cap - 1);
                }
                slots[i] = nexts->slots[j];
            }
        }
        PyMem_Free(nexts->slots);
        nexts->slots = slots;
        nexts->cap = cap;
    }
    size_t i = slot_hash(table, nexts->cap);
    while (nexts->slots[i].table != NULL) {
        i = (i + 1) & (size_t)(nexts->cap - 1);
    }
    nexts->slots[i].table = Py_NewRef(table);
    nexts->slots[i].next = next;
    nexts->used++;
    return 0;
}

static void nexts_free(Nexts *nexts) {
    for (Py_ssize_t i = 0; i < nexts->cap; i++) {
        Py_XDECREF(nexts->slots[i].table);
    }
    PyMem_Free(nexts->slots);
}

static int64_t next_after(int64_t key) {
    return key == PHP_INT_MAX ? PHP_INT_MAX : key + 1;
}

/* A key as PHP makes it from an index (_php_key): an int for a canonical decimal in range. */
typedef struct {
    PyObject *obj; /* new reference */
    int is_int;
    int64_t value;
} Key;

static int make_key(const char *text, Py_ssize_t size, Key *key) {
    key->is_int = 0;
    key->value = 0;
    if (size > 0 && ((text[0] >= '0' && text[0] <= '9') || text[0] == '-')) {
        int negative = text[0] == '-';
        Py_ssize_t digits = size - negative;
        const char *first = text + negative;
        /* -?[1-9][0-9]*|0 with at most 19 digits (2**63 has 19) */
        int canonical = digits >= 1 && digits <= 19 && first[0] >= '0' && first[0] <= '9' &&
                        (first[0] != '0' || (digits == 1 && !negative));
        uint64_t number = 0;
        for (Py_ssize_t i = 0; canonical && i < digits; i++) {
            if (first[i] < '0' || first[i] > '9') {
                canonical = 0;
            } else {
                number = number * 10 + (uint64_t)(first[i] - '0'); /* < 10**19 < 2**64 */
            }
        }
        uint64_t limit = negative ? (uint64_t)PHP_INT_MAX + 1 : (uint64_t)PHP_INT_MAX;
        if (canonical && number <= limit) {
            key->is_int = 1;
            key->value = negative ? (number == (uint64_t)PHP_INT_MAX + 1 ? INT64_MIN : -(int64_t)number)
                                  : (int64_t)number;
            key->obj = PyLong_FromLongLong((long long)key->value);
            return key->obj == NULL ? -1 : 0;
        }
    }
    key->obj = PyUnicode_DecodeUTF8(text, size, "surrogateescape");
    return key->obj == NULL ? -1 : 0;
}

static int starts_with(const char *text, Py_ssize_t size, const char *prefix) {
    size_t length = strlen(prefix);
    return (size_t)size >= length && memcmp(text, prefix, length) == 0;
}

/* _forbidden: a cookie prefix made by mangling, not sent as such. */
static int forbidden(const char *index, Py_ssize_t size, const char *name, Py_ssize_t name_size) {
    if (size < 2 || index[0] != '_' || index[1] != '_') {
        return 0;
    }
    return (starts_with(index, size, "__Host-") && !starts_with(name, name_size, "__Host-")) ||
           (starts_with(index, size, "__Secure-") && !starts_with(name, name_size, "__Secure-"));
}

typedef struct {
    PyObject *top;    /* borrowed: the result */
    Nexts nexts;
    long long max_nesting;
    char *scratch;    /* at least as long as the longest name: mangled names are built here */
} Decoder;

/* _store: table[key] = value, moving the next free index past an int key. Steals nothing. */
static int store(Decoder *dec, PyObject *table, Key *key, PyObject *value) {
    if (PyDict_SetItem(table, key->obj, value) < 0) {
        return -1;
    }
    if (key->is_int) {
        NextSlot *slot = nexts_find(&dec->nexts, table);
        if (slot != NULL && key->value >= slot->next) {
            slot->next = next_after(key->value);
        }
    }
    return 0;
}

/* _append (zend_hash_next_index_insert): 1 when stored, 0 when the next index is taken, -1 on error. */
static int append(Decoder *dec, PyObject *table, PyObject *value) {
    NextSlot *slot = nexts_find(&dec->nexts, table);
    int64_t index = 0;
    if (slot != NULL) {
        index = slot->next;
    } else {
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        int found = 0;
        int64_t highest = 0;
        while (PyDict_Next(table, &pos, &key, &item)) {
            if (PyLong_CheckExact(key)) {
                long long number = PyLong_AsLongLong(key);
                if (number == -1 && PyErr_Occurred()) {
                    return -1;
                }
                if (!found || number > highest) {
                    highest = number;
                    found = 1;
                }
            }
        }
        index = found ? next_after(highest) : 0;
    }
    PyObject *key = PyLong_FromLongLong((long long)index);
    if (key == NULL) {
        return -1;
    }
    int taken = PyDict_Contains(table, key);
    if (taken != 0 || PyDict_SetItem(table, key, value) < 0) {
        Py_DECREF(key);
        return taken > 0 ? 0 : -1;
    }
    Py_DECREF(key);
    if (slot != NULL) {
        slot->next = next_after(index);
        return 1;
    }
    return nexts_add(&dec->nexts, table, next_after(index)) < 0 ? -1 : 1;
}

static int is_c_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static void mangle(char *out, const char *in, Py_ssize_t size, int bracket_too) {
    for (Py_ssize_t i = 0; i < size; i++) {
        char c = in[i];
        out[i] = (c == ' ' || c == '.' || (bracket_too && c == '[')) ? '_' : c;
    }
}

/* Stores value at table[index] (or appends for '[]') unless the index is forbidden. */
static int store_at(Decoder *dec, PyObject *table, const char *index, Py_ssize_t size, int appends,
                    const char *name, Py_ssize_t name_size, PyObject *value) {
    if (appends) {
        return append(dec, table, value) < 0 ? -1 : 0;
    }
    if (forbidden(index, size, name, name_size)) {
        return 0;
    }
    Key key;
    if (make_key(index, size, &key) < 0) {
        return -1;
    }
    int status = store(dec, table, &key, value);
    Py_DECREF(key.obj);
    return status;
}

/* php_register_variable_ex (_register) for a decoded name of ``size`` bytes.
 * Returns -1 on error, else 0; *deleted is set when the nesting limit deleted the variable. */
static int register_variable(Decoder *dec, const char *name, Py_ssize_t size, PyObject *value, int *deleted) {
    const char *nul = memchr(name, '\0', (size_t)size);
    if (nul != NULL) {
        size = nul - name;
    }
    while (size > 0 && name[0] == ' ') {
        name++;
        size--;
    }
    const char *open = memchr(name, '[', (size_t)size);
    if (open == NULL) {
        if (size == 0) {
            return 0;
        }
        mangle(dec->scratch, name, size, 0);
        return store_at(dec, dec->top, dec->scratch, size, 0, name, size, value);
    }
    Py_ssize_t bracket = open - name;
    if (bracket == 0) {
        return 0;
    }
    char *var = dec->scratch; /* var stays in scratch[0, bracket) for the whole walk */
    mangle(var, name, bracket, 0);
    Py_ssize_t end = size, pos = bracket;
    PyObject *table = dec->top; /* borrowed: owned by its parent, which this walk never replaces */
    const char *index = var;
    Py_ssize_t index_size = bracket;
    int index_appends = 0;
    for (long long level = 1;; level++) {
        if (level > dec->max_nesting) {
            Key key;
            if (make_key(var, bracket, &key) < 0) {
                return -1;
            }
            PyObject *found = PyDict_GetItemWithError(dec->top, key.obj);
            int status = found != NULL ? PyDict_DelItem(dec->top, key.obj) : (PyErr_Occurred() ? -1 : 0);
            Py_DECREF(key.obj);
            *deleted = 1;
            return status;
        }
        Py_ssize_t start = pos + 1; /* <= end: name[pos] is '[' */
        Py_ssize_t scan = start < end && is_c_space(name[start]) ? start + 1 : start;
        Py_ssize_t close;
        const char *next_index = NULL;
        Py_ssize_t next_size = 0;
        int next_appends;
        if (scan < end && name[scan] == ']') {
            close = scan;
            next_appends = 1;
        } else {
            const char *found = scan < end ? memchr(name + scan, ']', (size_t)(end - scan)) : NULL;
            if (found == NULL) { /* not an index: at level 1 the '[' and the tail join the name */
                if (level == 1) {
                    var[bracket] = '_';
                    mangle(var + bracket + 1, name + start, end - start, 1);
                    index_size = bracket + 1 + (end - start); /* == end <= scratch size */
                }
                break;
            }
            close = found - name;
            next_index = name + start;
            next_size = close - start;
            next_appends = 0;
        }
        PyObject *child;
        if (index_appends) {
            child = PyDict_New();
            if (child == NULL) {
                return -1;
            }
            int stored = append(dec, table, child);
            Py_DECREF(child); /* table holds it when stored */
            if (stored <= 0) {
                return stored;
            }
        } else {
            if (forbidden(index, index_size, name, size)) {
                return 0;
            }
            Key key;
            if (make_key(index, index_size, &key) < 0) {
                return -1;
            }
            child = PyDict_GetItemWithError(table, key.obj);
            if (child == NULL && PyErr_Occurred()) {
                Py_DECREF(key.obj);
                return -1;
            }
            if (child == NULL || !PyDict_CheckExact(child)) {
                child = PyDict_New();
                if (child == NULL) {
                    Py_DECREF(key.obj);
                    return -1;
                }
                int status = store(dec, table, &key, child);
                Py_DECREF(child); /* table holds it when stored */
                if (status < 0) {
                    Py_DECREF(key.obj);
                    return -1;
                }
            }
            Py_DECREF(key.obj);
        }
        table = child;
        index = next_index;
        index_size = next_size;
        index_appends = next_appends;
        pos = close + 1;
        if (pos >= end || name[pos] != '[') {
            break;
        }
    }
    return store_at(dec, table, index, index_size, index_appends, name, size, value);
}

static int is_hex(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned char hex_value(unsigned char c) {
    return (unsigned char)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
}

/* php_url_decode (_unquote) of ``size`` bytes into ``out`` (room for ``size``); returns the length. */
static Py_ssize_t url_decode(const unsigned char *in, Py_ssize_t size, char *out) {
    Py_ssize_t length = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < size && is_hex(in[i + 1]) && is_hex(in[i + 2])) {
            c = (unsigned char)(hex_value(in[i + 1]) << 4 | hex_value(in[i + 2]));
            i += 2;
        }
        out[length++] = (char)c;
    }
    return length;
}

/* The pieces PHP counts (_trim): GET skips empty ones, POST only a last empty one. */
static Py_ssize_t count_pieces(const char *body, Py_ssize_t size, int get) {
    Py_ssize_t count = 0, start = 0;
    while (start <= size) {
        const char *amp = memchr(body + start, '&', (size_t)(size - start));
        Py_ssize_t stop = amp != NULL ? amp - body : size;
        if (stop > start || (!get && amp != NULL)) {
            count++;
        }
        start = stop + 1;
    }
    return count;
}

static int decode_pieces(Decoder *dec, const char *body, Py_ssize_t size, int get, Py_ssize_t keep,
                         char *decoded, int strict) {
    Py_ssize_t start = 0, taken = 0;
    while (start <= size && taken < keep) {
        const char *amp = memchr(body + start, '&', (size_t)(size - start));
        Py_ssize_t stop = amp != NULL ? amp - body : size;
        Py_ssize_t length = stop - start;
        const char *piece = body + start;
        start = stop + 1;
        if (length == 0 && (get || amp == NULL)) {
            continue;
        }
        taken++;
        const char *eq = memchr(piece, '=', (size_t)length);
        Py_ssize_t name_raw = eq != NULL ? eq - piece : length;
        Py_ssize_t name_size = url_decode((const unsigned char *)piece, name_raw, decoded);
        Py_ssize_t value_size = 0;
        if (eq != NULL) {
            const unsigned char *raw_value = (const unsigned char *)eq + 1;
            value_size = url_decode(raw_value, length - name_raw - 1, decoded + name_size);
        }
        PyObject *value = PyUnicode_DecodeUTF8(decoded + name_size, value_size, "surrogateescape");
        if (value == NULL) {
            return -1;
        }
        int deleted = 0;
        int status = register_variable(dec, decoded, name_size, value, &deleted);
        Py_DECREF(value);
        if (status < 0) {
            return -1;
        }
        if (deleted && strict) {
            return 1; /* on_limit="raise": the Python path reports it */
        }
    }
    return 0;
}

/* A small int argument (bool too), or 0 when it is of another type or too large for the C path. */
static int small_int(PyObject *number, long long *value) {
    if (!PyLong_CheckExact(number) && !PyBool_Check(number)) {
        return 0;
    }
    int overflow = 0;
    *value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (*value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return overflow == 0 && *value > -((long long)1 << 62) && *value < ((long long)1 << 62);
}

/* decode(body, source, max_input_vars, max_nesting, on_limit) -> dict, or None when the Python path
 * must run: on_limit="raise" with a limit exceeded, or arguments of types or values it leaves to Python. */
static PyObject *phpform_decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "decode() takes 5 arguments");
        return NULL;
    }
    PyObject *body = args[0];
    long long max_input_vars, max_nesting;
    if (!PyUnicode_Check(args[1]) || !PyUnicode_Check(args[4]) || !small_int(args[2], &max_input_vars) ||
        !small_int(args[3], &max_nesting)) {
        Py_RETURN_NONE;
    }
    int get = PyUnicode_CompareWithASCIIString(args[1], "get") == 0;
    if (!get && PyUnicode_CompareWithASCIIString(args[1], "post") != 0) {
        Py_RETURN_NONE;
    }
    int strict = PyUnicode_CompareWithASCIIString(args[4], "raise") == 0;
    long long kept_limit = get ? max_input_vars : max_input_vars + 1; /* see _kept() */
    if (kept_limit < 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t kept = kept_limit > PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : (Py_ssize_t)kept_limit;
    PyObject *owner = NULL;
    const char *raw;
    Py_ssize_t size;
    if (PyBytes_CheckExact(body)) {
        raw = PyBytes_AS_STRING(body);
        size = PyBytes_GET_SIZE(body);
    } else if (PyUnicode_CheckExact(body)) {
        raw = str_bytes(body, &size, &owner);
        if (raw == NULL) {
            return NULL;
        }
    } else {
        Py_RETURN_NONE;
    }
    if (get) {
        const char *nul = memchr(raw, '\0', (size_t)size); /* parse_str reads a C string */
        if (nul != NULL) {
            size = nul - raw;
        }
    }
    Py_ssize_t count = count_pieces(raw, size, get);
    if (count > kept && strict) {
        Py_XDECREF(owner);
        Py_RETURN_NONE;
    }
    /* names and values decode into ``decoded`` (never longer than their piece), mangled names into
     * ``scratch`` (never longer than the name): both sized from the body */
    char *decoded = PyMem_Malloc((size_t)size + 1);
    char *scratch = PyMem_Malloc((size_t)size + 1);
    PyObject *top = PyDict_New();
    if (decoded == NULL || scratch == NULL || top == NULL) {
        PyMem_Free(decoded);
        PyMem_Free(scratch);
        Py_XDECREF(top);
        Py_XDECREF(owner);
        return top == NULL ? NULL : PyErr_NoMemory();
    }
    Decoder dec = {top, {NULL, 0, 0}, max_nesting, scratch};
    int status = decode_pieces(&dec, raw, size, get, count > kept ? kept : count, decoded, strict);
    nexts_free(&dec.nexts);
    PyMem_Free(decoded);
    PyMem_Free(scratch);
    Py_XDECREF(owner);
    if (status != 0) {
        Py_DECREF(top);
        if (status < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    return top;
}

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)(void (*)(void))phpform_encode, METH_FASTCALL,
     "encode(data, rfc3986, php_float) -> str | None: http_build_query, or None for the Python path."},
    {"decode", (PyCFunction)(void (*)(void))phpform_decode, METH_FASTCALL,
     "decode(body, source, max_input_vars, max_nesting, on_limit) -> dict | None: $_POST/parse_str, "
     "or None for the Python path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_phpform_c",
    "C paths of contactsync.wire.phpform (the Python code is the reference).", -1, methods, NULL, NULL, NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__phpform_c(void) {
    const char *safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    for (const char *c = safe; *c; c++) {
        SAFE_1738[(unsigned char)*c] = 1;
        SAFE_3986[(unsigned char)*c] = 1;
    }
    SAFE_3986['~'] = 1;
    return PyModule_Create(&module_def);
}
