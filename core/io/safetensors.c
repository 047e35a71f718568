/* placeholder: being written */
typedef int dfx_placeholder_;
