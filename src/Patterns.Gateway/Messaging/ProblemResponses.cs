using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Patterns.RequestResponse;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Gateway.Messaging;

/// <summary>Writes RFC 9457 problem details, and maps messaging exceptions to their status codes.</summary>
internal static class ProblemResponses
{
    public static Task WriteAsync(HttpContext context, int status, string title, string detail, string? retryAfterSeconds = null)
    {
        var response = context.Response;
        if (response.HasStarted)
        {
            context.Abort();
            return Task.CompletedTask;
        }

        response.Clear();
        response.StatusCode = status;
        response.ContentType = "application/problem+json";
        if (retryAfterSeconds is not null)
        {
            response.Headers.RetryAfter = retryAfterSeconds;
        }

        using (var json = new Utf8JsonWriter(response.BodyWriter))
        {
            Write(json, status, title, detail, context.Request.Path.Value);
        }

        return response.BodyWriter.FlushAsync(context.RequestAborted).AsTask();
    }

    /// <summary>Problem details as the content of a response the gateway makes itself (a proxied request that timed out, for example).</summary>
    public static HttpContent Content(int status, string title, string detail, string? instance)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var json = new Utf8JsonWriter(buffer))
        {
            Write(json, status, title, detail, instance);
        }

        var content = new ByteArrayContent(buffer.WrittenSpan.ToArray());
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/problem+json");
        return content;
    }

    private static void Write(Utf8JsonWriter json, int status, string title, string detail, string? instance)
    {
        json.WriteStartObject();
        json.WriteString("type", TypeOf(status));
        json.WriteString("title", title);
        json.WriteNumber("status", status);
        json.WriteString("detail", detail);
        json.WriteString("instance", instance);
        json.WriteEndObject();
    }

    /// <summary>Maps the exceptions of a messaging call; returns false for one it does not know, which the caller rethrows.</summary>
    public static bool TryMap(Exception exception, out int status, out string title, out string? retryAfter)
    {
        retryAfter = null;
        (status, title) = exception switch
        {
            MessageDeserializationException or JsonException => (StatusCodes.Status400BadRequest, "The request body is not a valid message"),
            HandlerNotFoundException or QueueNotFoundException => (StatusCodes.Status404NotFound, "No handler for this message"),
            RequestTimeoutException => (StatusCodes.Status504GatewayTimeout, "The handler did not answer in time"),
            TransportUnavailableException => (StatusCodes.Status503ServiceUnavailable, "The transport is unavailable"),
            QueueFullException => (StatusCodes.Status503ServiceUnavailable, "The queue is full"),
            MessageTooLargeException => (StatusCodes.Status413PayloadTooLarge, "The message is larger than the transport accepts"),
            RequestFailedException => (StatusCodes.Status500InternalServerError, "The handler failed"),
            _ => (0, string.Empty),
        };
        if (status == StatusCodes.Status503ServiceUnavailable)
        {
            retryAfter = "1";
        }

        return status != 0;
    }

    private static string TypeOf(int status) => status switch
    {
        400 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.1",
        401 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.2",
        403 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.4",
        404 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.5",
        413 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.14",
        415 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.16",
        429 => "https://www.rfc-editor.org/rfc/rfc6585#section-4",
        500 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.6.1",
        502 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.6.3",
        503 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.6.4",
        504 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.6.5",
        _ => "about:blank",
    };
}
