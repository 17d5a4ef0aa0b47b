// Prints the configuration table for the README from src/config.ts.
import { settingsTable } from "../src/config.js";

console.log(settingsTable());
