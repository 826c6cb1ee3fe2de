/** See spent-key.mjs. */
export declare const KEY_MARGIN_MS: number;
export declare function spentKeyReplacements(exported: unknown, now?: number): string[];
