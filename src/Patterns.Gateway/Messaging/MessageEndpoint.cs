using System.Buffers;
using System.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Gateway.Telemetry;
using Patterns.Serialization;

namespace Patterns.Gateway.Messaging;

/// <summary>The shared path of every translated endpoint: read and check the body, deserialize it, call, map errors.</summary>
internal static class MessageEndpoint
{
    public static async Task HandleAsync<TMessage>(HttpContext context, string route, MessageEndpointOptions options, Func<HttpContext, TMessage, IMessageSerializer, Task> call)
    {
        var started = Stopwatch.GetTimestamp();
        using var activity = GatewayTelemetry.Source.StartActivity("gateway.translate " + route, ActivityKind.Server);
        activity?.SetTag(GatewayTelemetry.RouteTag, route);
        try
        {
            var serializer = context.RequestServices.GetRequiredService<IMessageSerializer>();
            var request = context.Request;
            if (request.ContentLength > options.MaxBodyBytes)
            {
                await ProblemResponses.WriteAsync(context, 413, "The request body is too large", $"The body has {request.ContentLength} bytes; this endpoint accepts at most {options.MaxBodyBytes}.").ConfigureAwait(false);
                return;
            }

            if (request.ContentType is not { } contentType || !IsJson(contentType))
            {
                await ProblemResponses.WriteAsync(context, 415, "The request body must be JSON", $"Content-Type is '{request.ContentType}'; send 'application/json'.").ConfigureAwait(false);
                return;
            }

            var buffer = new ArrayBufferWriter<byte>(request.ContentLength is { } known ? (int)Math.Max(1, known) : 4096);
            if (!await ReadBodyAsync(request, buffer, options.MaxBodyBytes, context.RequestAborted).ConfigureAwait(false))
            {
                await ProblemResponses.WriteAsync(context, 413, "The request body is too large", $"This endpoint accepts at most {options.MaxBodyBytes} bytes.").ConfigureAwait(false);
                return;
            }

            if (buffer.WrittenCount == 0)
            {
                await ProblemResponses.WriteAsync(context, 400, "The request body is empty", $"Send a JSON '{typeof(TMessage).Name}'.").ConfigureAwait(false);
                return;
            }

            var message = (TMessage)serializer.Deserialize(buffer.WrittenMemory, typeof(TMessage));
            await call(context, message, serializer).ConfigureAwait(false);
        }
        catch (Exception ex) when (!context.RequestAborted.IsCancellationRequested && ProblemResponses.TryMap(ex, out var status, out var title, out var retryAfter))
        {
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            await ProblemResponses.WriteAsync(context, status, title, ex.Message, retryAfter).ConfigureAwait(false);
        }
        finally
        {
            GatewayTelemetry.TranslationDuration.Record(
                Stopwatch.GetElapsedTime(started).TotalSeconds,
                new KeyValuePair<string, object?>(GatewayTelemetry.RouteTag, route),
                new KeyValuePair<string, object?>(GatewayTelemetry.StatusTag, context.Response.StatusCode));
        }
    }

    private static bool IsJson(string contentType) =>
        contentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase)
        || contentType.Contains("+json", StringComparison.OrdinalIgnoreCase);

    private static async Task<bool> ReadBodyAsync(HttpRequest request, ArrayBufferWriter<byte> buffer, int limit, CancellationToken cancellationToken)
    {
        while (true)
        {
            var memory = buffer.GetMemory(4096);
            var read = await request.Body.ReadAsync(memory, cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                return true;
            }

            buffer.Advance(read);
            if (buffer.WrittenCount > limit)
            {
                return false;
            }
        }
    }
}
