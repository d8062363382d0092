/*
 * /init of the lancet Linux guest's initramfs: spins in ring 3 forever and never makes a system call
 * (`syscall` from guest ring 3 does not work under this machine's nested KVM). The kernel itself brings
 * eth0 up from the `ip=` argument and answers ping; user space only has to exist and stay alive.
 * Built by build.sh with: gcc -nostdlib -static -no-pie; build.sh rejects the binary if its disassembly
 * contains any system-call instruction.
 */
	.text
	.globl	_start
	.type	_start, @function
_start:
1:	pause
	jmp	1b
	.size	_start, . - _start
	.section .note.GNU-stack, "", @progbits
