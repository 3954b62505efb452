// vlpeft: placeholder main until the demo lands.
#include <cstdio>
int main() { std::puts("vlpeft"); return 0; }
