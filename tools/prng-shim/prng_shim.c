/*
 * bcryptprimitives.dll stand-in for Wine 8.
 *
 * Rust's standard library for Windows imports `ProcessPrng` from
 * bcryptprimitives.dll. Wine 8.0 does not ship that DLL, so every Rust .exe
 * fails to load (status c0000135). This DLL exports `ProcessPrng` and forwards
 * it to advapi32's `SystemFunction036` (RtlGenRandom).
 *
 * Test infrastructure only: built by scripts/setup.sh into the Wine prefix,
 * never linked into the library.
 */
#include <windows.h>

typedef BOOLEAN(WINAPI *rtl_gen_random_fn)(PVOID, ULONG);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    static rtl_gen_random_fn gen;
    if (!gen) {
        HMODULE advapi = LoadLibraryA("advapi32.dll");
        if (!advapi)
            return FALSE;
        gen = (rtl_gen_random_fn)GetProcAddress(advapi, "SystemFunction036");
        if (!gen)
            return FALSE;
    }
    while (len > 0) {
        ULONG chunk = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!gen(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE inst, DWORD reason, LPVOID reserved)
{
    (void)inst;
    (void)reason;
    (void)reserved;
    return TRUE;
}
