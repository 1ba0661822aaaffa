/**
 * The "SSVQ Inspector" custom readonly editor for `*.onnx` (priority `option`: it opens only when the
 * user picks it). The webview shows the model's summary and weights, for a `.ssvq.onnx` its SSVQ
 * parameters and codebooks read back from the file, and a "Compress with SSVQ" button.
 */
import * as vscode from "vscode";
import { basename } from "node:path";
import { parseFromWebview, type ToInspectorMessage } from "../../webview-protocol.js";
import type { JobRegistry } from "../jobRegistry.js";
import { ssvqLog } from "../log.js";
import { webviewHtml, webviewOptions } from "../webviewHtml.js";
import { InspectorDocument } from "./inspectorDocument.js";

export const INSPECTOR_VIEW_TYPE = "ssvq.inspector";

export class InspectorProvider implements vscode.CustomReadonlyEditorProvider<InspectorDocument> {
  static register(context: vscode.ExtensionContext, registry: JobRegistry): vscode.Disposable {
    return vscode.window.registerCustomEditorProvider(INSPECTOR_VIEW_TYPE, new InspectorProvider(context, registry), {
      supportsMultipleEditorsPerDocument: true,
    });
  }

  private constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly registry: JobRegistry,
  ) {}

  openCustomDocument(uri: vscode.Uri): InspectorDocument {
    return new InspectorDocument(uri, this.context.extensionPath);
  }

  resolveCustomEditor(document: InspectorDocument, panel: vscode.WebviewPanel): void {
    const openedAt = Date.now();
    const webview = panel.webview;
    webview.options = webviewOptions(this.context.extensionUri);
    webview.html = webviewHtml(webview, this.context.extensionUri, "inspector", `SSVQ Inspector: ${basename(document.uri.fsPath)}`);
    const post = (m: ToInspectorMessage) => void webview.postMessage(m);
    const subscriptions: vscode.Disposable[] = [];

    const sendInspection = async (startedAt: number) => {
      post({ type: "loading", fileName: basename(document.uri.fsPath), fileBytes: document.fileBytes() });
      const result = await document.inspection(startedAt);
      post(result);
    };
    const sendState = () => {
      const job = this.registry.get(document.uri);
      post({
        type: "compressionState",
        state: job ? { running: true, text: job.progress.text(), fraction: job.progress.overallFraction() } : { running: false },
      });
    };
    let stateTimer: ReturnType<typeof setTimeout> | undefined;
    subscriptions.push(
      webview.onDidReceiveMessage((raw: unknown) => {
        const m = parseFromWebview(raw);
        if (!m) return;
        switch (m.type) {
          case "ready":
            post({ type: "trust", trusted: vscode.workspace.isTrusted });
            sendState();
            void sendInspection(openedAt);
            break;
          case "reload":
            void sendInspection(Date.now());
            break;
          case "compress":
            void vscode.commands.executeCommand(m.chooseSettings ? "ssvq.compressWithSettings" : "ssvq.compress", document.uri);
            break;
          case "cancelCompression":
            this.registry.get(document.uri)?.cancel();
            break;
          case "showLog":
            ssvqLog().show(true);
            break;
          case "openPanel":
            void vscode.commands.executeCommand("ssvq.openPanel", document.uri);
            break;
        }
      }),
      document.onDidChangeFile(() => void sendInspection(Date.now())),
      // At most five state updates a second while a compression of this model streams events.
      this.registry.onDidChange((job) => {
        if (job.model.fsPath !== document.uri.fsPath || stateTimer) return;
        stateTimer = setTimeout(() => {
          stateTimer = undefined;
          sendState();
        }, 200);
      }),
      vscode.workspace.onDidGrantWorkspaceTrust(() => post({ type: "trust", trusted: true })),
    );
    panel.onDidDispose(() => {
      if (stateTimer) clearTimeout(stateTimer);
      for (const s of subscriptions) s.dispose();
    });
  }
}
