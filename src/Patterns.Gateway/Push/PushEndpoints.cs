using System.Buffers;
using System.Globalization;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Gateway.Messaging;
using Patterns.Gateway.Telemetry;

namespace Patterns.Gateway.Push;

/// <summary>The request delegates of the three push transports.</summary>
internal static class PushEndpoints
{
    private static readonly byte[] SseId = "id: "u8.ToArray();
    private static readonly byte[] SseEvent = "\nevent: "u8.ToArray();
    private static readonly byte[] SseData = "\ndata: "u8.ToArray();
    private static readonly byte[] SseEnd = "\n\n"u8.ToArray();
    private static readonly byte[] SseConnected = ": connected\n\n"u8.ToArray();
    private static readonly byte[] SseKeepAlive = ": keep-alive\n\n"u8.ToArray();

    public static async Task ServerSentEventsAsync(HttpContext context, string topic, PushOptions options)
    {
        var hub = Hub(context);
        if (!hub.TryOpen())
        {
            await ProblemResponses.WriteAsync(context, 503, "Too many push connections", "The gateway holds its maximum of push connections; retry later.", "1").ConfigureAwait(false);
            return;
        }

        var connection = new PushConnection(options.BufferCapacity, options.SlowClient) { CutOff = () => AbortQuietly(context) };
        TopicFeed? feed = null;
        KeepAliveMonitor? keepAlive = null;
        try
        {
            feed = await hub.FeedAsync(topic, context.RequestAborted).ConfigureAwait(false);
            var response = context.Response;
            response.ContentType = "text/event-stream";
            response.Headers.CacheControl = "no-cache";
            response.Headers["X-Accel-Buffering"] = "no";
            feed.Attach(connection, LastEventId(context.Request));
            if (options.KeepAliveInterval is { } interval)
            {
                keepAlive = new KeepAliveMonitor(connection, hub.Time, interval, Stalled, (context, topic, hub));
            }

            await response.StartAsync(context.RequestAborted).ConfigureAwait(false);
            await response.BodyWriter.WriteAsync(SseConnected, context.RequestAborted).ConfigureAwait(false);
            var reader = connection.Reader;
            while (await reader.WaitToReadAsync(context.RequestAborted).ConfigureAwait(false))
            {
                while (reader.TryRead(out var message))
                {
                    if (ReferenceEquals(message, PushMessage.KeepAlive))
                    {
                        response.BodyWriter.Write(SseKeepAlive);
                    }
                    else
                    {
                        WriteEvent(response.BodyWriter, message);
                    }
                }

                keepAlive?.WriteStarted();
                await response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
                keepAlive?.WriteEnded();
            }

            if (connection.Disconnected)
            {
                context.Abort();
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
        }
        finally
        {
            keepAlive?.Dispose();
            feed?.Detach(connection);
            hub.Close();
        }
    }

    /// <summary>A client that took no write for a whole keep-alive interval: cut it off, which ends its request and frees its buffer.</summary>
    private static void Stalled(object? state)
    {
        var (context, topic, hub) = ((HttpContext, string, PushHub))state!;
        GatewayTelemetry.PushDisconnected.Add(1, new KeyValuePair<string, object?>(GatewayTelemetry.TopicTag, topic));
        GatewayLog.StalledClientDropped(hub.Logger, topic);
        AbortQuietly(context);
    }

    /// <summary>
    /// Aborts a request from another thread (the keep-alive timer, a publisher cutting off a slow client). The request may
    /// have ended in the meantime, and its context been recycled: there is then nothing left to abort, and the exception
    /// must not reach the thread pool, where it would end the process.
    /// </summary>
    private static void AbortQuietly(HttpContext context)
    {
        try
        {
            context.Abort();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public static async Task LongPollAsync(HttpContext context, string topic, PushOptions options)
    {
        var hub = Hub(context);
        var feed = await hub.FeedAsync(topic, context.RequestAborted).ConfigureAwait(false);
        var after = LastEventId(context.Request) ?? feed.LastId;
        var (messages, next, gap) = feed.After(after, options.LongPollMaxBatch);
        if (messages.Count == 0)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
            var expired = Task.Delay(options.LongPollTimeout, hub.Time, timeout.Token);
            await Task.WhenAny(next, expired).ConfigureAwait(false);
            await timeout.CancelAsync().ConfigureAwait(false);
            context.RequestAborted.ThrowIfCancellationRequested();
            (messages, _, gap) = feed.After(after, options.LongPollMaxBatch);
            if (messages.Count == 0)
            {
                context.Response.StatusCode = StatusCodes.Status204NoContent;
                context.Response.Headers.CacheControl = "no-store";
                return;
            }
        }

        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "application/json";
        context.Response.Headers.CacheControl = "no-store";
        using (var json = new Utf8JsonWriter(context.Response.BodyWriter))
        {
            json.WriteStartObject();
            json.WriteNumber("lastEventId", messages[^1].Id);
            json.WriteBoolean("gap", gap);
            json.WriteStartArray("messages");
            foreach (var message in messages)
            {
                WriteMessage(json, message, type: null);
            }

            json.WriteEndArray();
            json.WriteEndObject();
        }

        await context.Response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    public static async Task WebSocketAsync(HttpContext context, IReadOnlySet<string> topics, PushOptions options)
    {
        if (!context.WebSockets.IsWebSocketRequest)
        {
            await ProblemResponses.WriteAsync(context, 400, "A WebSocket upgrade is required", "Connect with a WebSocket client.").ConfigureAwait(false);
            return;
        }

        var hub = Hub(context);
        if (!hub.TryOpen())
        {
            await ProblemResponses.WriteAsync(context, 503, "Too many push connections", "The gateway holds its maximum of push connections; retry later.", "1").ConfigureAwait(false);
            return;
        }

        try
        {
            using var socket = await context.WebSockets.AcceptWebSocketAsync(AcceptContext(options)).ConfigureAwait(false);
            await RunWebSocketAsync(context, socket, topics, hub, options).ConfigureAwait(false);
        }
        finally
        {
            hub.Close();
        }
    }

    /// <summary>
    /// With a keep-alive interval the runtime's WebSocket sends a Ping frame after each silent interval and aborts the socket
    /// when no Pong comes back within the timeout; without one, the WebSocket middleware's own options apply.
    /// </summary>
    private static WebSocketAcceptContext AcceptContext(PushOptions options) => options.KeepAliveInterval is { } interval
        ? new WebSocketAcceptContext { KeepAliveInterval = interval, KeepAliveTimeout = options.KeepAliveTimeout }
        : new WebSocketAcceptContext();

    private static async Task RunWebSocketAsync(HttpContext context, WebSocket socket, IReadOnlySet<string> topics, PushHub hub, PushOptions options)
    {
        var connection = new PushConnection(options.BufferCapacity, options.SlowClient);
        var subscribed = new Dictionary<string, TopicFeed>(StringComparer.Ordinal);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        using var sendLock = new SemaphoreSlim(1, 1);
        var sender = SendLoopAsync(socket, connection, sendLock, stop.Token);
        try
        {
            var buffer = new byte[4096];
            while (socket.State == WebSocketState.Open)
            {
                var received = await ReceiveFrameAsync(socket, buffer, stop.Token).ConfigureAwait(false);
                if (received is null)
                {
                    break;
                }

                var reply = await HandleFrameAsync(received.Value, topics, hub, connection, subscribed, stop.Token).ConfigureAwait(false);
                await SendAsync(socket, sendLock, reply, stop.Token).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or WebSocketException)
        {
            if (await WasKeepAliveTimeoutAsync(ex, socket).ConfigureAwait(false))
            {
                GatewayTelemetry.PushDisconnected.Add(1);
                GatewayLog.UnresponsiveWebSocketDropped(hub.Logger, context.Request.Path.Value ?? "/", options.KeepAliveTimeout, subscribed.Count);
            }
        }
        finally
        {
            foreach (var feed in subscribed.Values)
            {
                feed.Detach(connection);
            }

            connection.Close();
            await stop.CancelAsync().ConfigureAwait(false);
            try
            {
                await sender.ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or WebSocketException or ObjectDisposedException)
            {
            }
        }
    }

    /// <summary>
    /// The runtime aborts a socket whose client left a keep-alive Ping unanswered. The pending receive fails in whichever way
    /// the aborted connection makes it fail (and the request counts as aborted too), but the socket keeps the keep-alive
    /// fault and hands it, as the inner exception, to any later call: one more receive tells the two apart.
    /// </summary>
    private static async ValueTask<bool> WasKeepAliveTimeoutAsync(Exception caught, WebSocket socket)
    {
        if (socket.State != WebSocketState.Aborted)
        {
            return false;
        }

        if (IsKeepAliveFault(caught.InnerException))
        {
            return true;
        }

        try
        {
            await socket.ReceiveAsync(Memory<byte>.Empty, CancellationToken.None).ConfigureAwait(false);
            return false;
        }
        catch (Exception probe) when (probe is WebSocketException or OperationCanceledException or ObjectDisposedException)
        {
            return IsKeepAliveFault(probe.InnerException);
        }
    }

    private static bool IsKeepAliveFault(Exception? exception) => exception is WebSocketException { WebSocketErrorCode: WebSocketError.Faulted };

    private static async Task<byte[]> HandleFrameAsync(
        ArraySegment<byte> frame, IReadOnlySet<string> topics, PushHub hub, PushConnection connection, Dictionary<string, TopicFeed> subscribed, CancellationToken cancellationToken)
    {
        string? type = null, topic = null;
        long? lastEventId = null;
        try
        {
            using var document = JsonDocument.Parse(frame);
            var root = document.RootElement;
            type = root.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
            topic = root.TryGetProperty("topic", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString() : null;
            lastEventId = root.TryGetProperty("lastEventId", out var l) && l.TryGetInt64(out var id) ? id : null;
        }
        catch (JsonException ex)
        {
            return Control("error", null, $"The frame is not JSON: {ex.Message}");
        }

        if (topic is null || (type != "subscribe" && type != "unsubscribe"))
        {
            return Control("error", topic, "Send {\"type\":\"subscribe\"|\"unsubscribe\",\"topic\":\"...\"}.");
        }

        if (!topics.Contains(topic))
        {
            return Control("error", topic, $"The topic '{topic}' is not exposed on this endpoint.");
        }

        if (type == "subscribe")
        {
            if (!subscribed.ContainsKey(topic))
            {
                var feed = await hub.FeedAsync(topic, cancellationToken).ConfigureAwait(false);
                feed.Attach(connection, lastEventId);
                subscribed[topic] = feed;
            }

            return Control("subscribed", topic, null);
        }

        if (subscribed.Remove(topic, out var removed))
        {
            removed.Detach(connection);
        }

        return Control("unsubscribed", topic, null);
    }

    private static async Task SendLoopAsync(WebSocket socket, PushConnection connection, SemaphoreSlim sendLock, CancellationToken cancellationToken)
    {
        var reader = connection.Reader;
        var buffer = new ArrayBufferWriter<byte>(1024);
        while (await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            while (reader.TryRead(out var message))
            {
                buffer.ResetWrittenCount();
                using (var json = new Utf8JsonWriter(buffer))
                {
                    WriteMessage(json, message, "message");
                }

                await SendAsync(socket, sendLock, buffer.WrittenMemory, cancellationToken).ConfigureAwait(false);
            }
        }

        if (connection.Disconnected && socket.State == WebSocketState.Open)
        {
            await socket.CloseOutputAsync(WebSocketCloseStatus.PolicyViolation, "Too slow: the push buffer overflowed.", cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task SendAsync(WebSocket socket, SemaphoreSlim sendLock, ReadOnlyMemory<byte> frame, CancellationToken cancellationToken)
    {
        await sendLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await socket.SendAsync(frame, WebSocketMessageType.Text, endOfMessage: true, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            sendLock.Release();
        }
    }

    private static async Task<ArraySegment<byte>?> ReceiveFrameAsync(WebSocket socket, byte[] buffer, CancellationToken cancellationToken)
    {
        var count = 0;
        while (true)
        {
            if (count == buffer.Length)
            {
                return new ArraySegment<byte>(Encoding.UTF8.GetBytes("{\"type\":\"oversize\"}"));
            }

            var result = await socket.ReceiveAsync(new ArraySegment<byte>(buffer, count, buffer.Length - count), cancellationToken).ConfigureAwait(false);
            if (result.MessageType == WebSocketMessageType.Close)
            {
                await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, cancellationToken).ConfigureAwait(false);
                return null;
            }

            count += result.Count;
            if (result.EndOfMessage)
            {
                return new ArraySegment<byte>(buffer, 0, count);
            }
        }
    }

    private static byte[] Control(string type, string? topic, string? message)
    {
        var buffer = new ArrayBufferWriter<byte>(128);
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("type", type);
            if (topic is not null)
            {
                json.WriteString("topic", topic);
            }

            if (message is not null)
            {
                json.WriteString("message", message);
            }

            json.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    private static void WriteMessage(Utf8JsonWriter json, PushMessage message, string? type)
    {
        json.WriteStartObject();
        if (type is not null)
        {
            json.WriteString("type", type);
        }

        json.WriteString("topic", message.Topic);
        json.WriteNumber("id", message.Id);
        json.WritePropertyName("data");
        json.WriteRawValue(message.Data.Span, skipInputValidation: true);
        json.WriteEndObject();
    }

    private static void WriteEvent(IBufferWriter<byte> writer, PushMessage message)
    {
        writer.Write(SseId);
        writer.Write(Encoding.ASCII.GetBytes(message.Id.ToString(CultureInfo.InvariantCulture)));
        writer.Write(SseEvent);
        writer.Write(Encoding.UTF8.GetBytes(message.Topic));
        var data = message.Data.Span;

        // A data field ends at a line break: a payload with line breaks becomes several data lines.
        while (true)
        {
            writer.Write(SseData);
            var newline = data.IndexOfAny((byte)'\n', (byte)'\r');
            if (newline < 0)
            {
                writer.Write(data);
                break;
            }

            writer.Write(data[..newline]);
            data = data[(newline + 1)..];
        }

        writer.Write(SseEnd);
    }

    private static long? LastEventId(HttpRequest request)
    {
        var text = request.Headers["Last-Event-ID"].ToString();
        if (string.IsNullOrEmpty(text))
        {
            text = request.Query["lastEventId"].ToString();
        }

        return long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var id) && id >= 0 ? id : null;
    }

    private static PushHub Hub(HttpContext context) =>
        context.RequestServices.GetService<PushHub>()
        ?? throw new InvalidOperationException("Push endpoints need the gateway's services: call builder.AddGateway() when building the host.");
}
