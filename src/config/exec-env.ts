/**
 * What an exec sink's child may be given. systemd hands the daemon NOTIFY_SOCKET (with
 * NotifyAccess=all any process of the unit may tell systemd "ready" or "stopping"),
 * CREDENTIALS_DIRECTORY (the unit's secrets) and WATCHDOG_USEC/WATCHDOG_PID: none of them is
 * ever passed to a sink program, whatever the config says.
 */
export const EXEC_ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function allowedInChildEnv(name: string): boolean {
  return name !== 'NOTIFY_SOCKET' && name !== 'CREDENTIALS_DIRECTORY' && !name.startsWith('WATCHDOG_');
}

export const FORBIDDEN_ENV_MESSAGE = 'NOTIFY_SOCKET, CREDENTIALS_DIRECTORY and WATCHDOG_* belong to the daemon and are never passed to a sink program';
