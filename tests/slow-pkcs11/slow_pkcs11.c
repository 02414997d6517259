/*
 * A slow PKCS#11 module for benchmarks and tests: it forwards every call to a real module
 * (REAL_MODULE, e.g. SoftHSMv2) and makes C_Encrypt and C_Decrypt slow, the way a network
 * HSM answers in milliseconds. Never part of a keygate build: a config has to name this
 * library as its `module` on purpose.
 *
 *   gcc -shared -fPIC -O2 -o slow.so slow_pkcs11.c -ldl \
 *       -DREAL_MODULE='"/usr/lib/softhsm/libsofthsm2.so"' -DDELAY_US=2000
 *   ... -DHOLD_FILE='"/tmp/x/hold"'   (also: wait while that file exists, polling each ms)
 *
 * Only the call that produces output is slowed (C_Encrypt/C_Decrypt are called once with a
 * NULL buffer for the length first). Self-contained: the PKCS#11 v2.40 function list is 68
 * function pointers after a two-byte version, C_Encrypt and C_Decrypt at indexes 30 and 34.
 */
#include <dlfcn.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef REAL_MODULE
#error "define REAL_MODULE"
#endif
#ifndef DELAY_US
#define DELAY_US 0
#endif

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef void (*CK_FN)(void);
typedef struct {
    unsigned char major, minor;
} CK_VERSION;
typedef struct {
    CK_VERSION version;
    CK_FN fn[68];
} FUNCTION_LIST;
typedef CK_RV (*CRYPT_FN)(CK_ULONG, unsigned char *, CK_ULONG, unsigned char *, CK_ULONG *);
typedef CK_RV (*GET_LIST_FN)(FUNCTION_LIST **);

enum { ENCRYPT = 30, DECRYPT = 34, CKR_GENERAL_ERROR = 5 };

static FUNCTION_LIST list;
static FUNCTION_LIST *real;

static void slow_down(void) {
#ifdef HOLD_FILE
    while (access(HOLD_FILE, F_OK) == 0) {
        usleep(1000);
    }
#endif
    if (DELAY_US > 0) {
        struct timespec t = {DELAY_US / 1000000, (DELAY_US % 1000000) * 1000L};
        while (nanosleep(&t, &t) != 0) {
        }
    }
}

static CK_RV slow_encrypt(CK_ULONG s, unsigned char *in, CK_ULONG n, unsigned char *out,
                          CK_ULONG *out_len) {
    if (out != NULL) {
        slow_down();
    }
    return ((CRYPT_FN)real->fn[ENCRYPT])(s, in, n, out, out_len);
}

static CK_RV slow_decrypt(CK_ULONG s, unsigned char *in, CK_ULONG n, unsigned char *out,
                          CK_ULONG *out_len) {
    if (out != NULL) {
        slow_down();
    }
    return ((CRYPT_FN)real->fn[DECRYPT])(s, in, n, out, out_len);
}

CK_RV C_GetFunctionList(FUNCTION_LIST **out) {
    if (real == NULL) {
        void *lib = dlopen(REAL_MODULE, RTLD_NOW | RTLD_LOCAL);
        GET_LIST_FN get = lib ? (GET_LIST_FN)dlsym(lib, "C_GetFunctionList") : NULL;
        FUNCTION_LIST *found = NULL;
        if (get == NULL || get(&found) != 0 || found == NULL) {
            return CKR_GENERAL_ERROR;
        }
        memcpy(&list, found, sizeof list);
        list.fn[ENCRYPT] = (CK_FN)slow_encrypt;
        list.fn[DECRYPT] = (CK_FN)slow_decrypt;
        real = found;
    }
    *out = &list;
    return 0;
}
