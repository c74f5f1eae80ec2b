using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Gateway.LoadBalancing;
using Patterns.Gateway.Messaging;
using Patterns.Gateway.Telemetry;
using Yarp.ReverseProxy;

namespace Patterns.Gateway.Aggregation;

/// <summary>Fans one request out to the legs in parallel and merges their JSON answers into one object.</summary>
internal sealed class AggregateEndpoint(string pattern, AggregateBuilder definition)
{
    private readonly AggregateLeg[] _legs = [.. definition.Legs];

    public async Task InvokeAsync(HttpContext context)
    {
        var services = context.RequestServices;
        var client = services.GetRequiredService<AggregateClient>();
        byte[]? body = null;
        if (_legs.Any(l => l.Options.ForwardBody))
        {
            if (context.Request.ContentLength > definition.MaxBodyBytes)
            {
                await ProblemResponses.WriteAsync(context, 413, "The request body is too large", $"This aggregate accepts at most {definition.MaxBodyBytes} bytes.").ConfigureAwait(false);
                return;
            }

            using var copy = new MemoryStream();
            await context.Request.Body.CopyToAsync(copy, context.RequestAborted).ConfigureAwait(false);
            if (copy.Length > definition.MaxBodyBytes)
            {
                await ProblemResponses.WriteAsync(context, 413, "The request body is too large", $"This aggregate accepts at most {definition.MaxBodyBytes} bytes.").ConfigureAwait(false);
                return;
            }

            body = copy.ToArray();
        }

        var tasks = new Task<LegResult>[_legs.Length];
        for (var i = 0; i < _legs.Length; i++)
        {
            tasks[i] = RunLegAsync(context, client, _legs[i], body);
        }

        var results = await Task.WhenAll(tasks).ConfigureAwait(false);
        foreach (var result in results)
        {
            if (result.Json is null && result.Leg.Options.OnFailure == LegFailurePolicy.Fail)
            {
                var status = result.TimedOut ? 504 : 502;
                await ProblemResponses.WriteAsync(context, status, result.TimedOut ? "An aggregate leg timed out" : "An aggregate leg failed",
                    $"Leg '{result.Leg.Name}': {result.Error}").ConfigureAwait(false);
                return;
            }
        }

        var failed = results.Where(r => r.Json is null).Select(r => r.Leg.Name).ToArray();
        var response = context.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "application/json";
        if (failed.Length > 0)
        {
            response.Headers["X-Partial"] = string.Join(',', failed);
        }

        using (var json = new Utf8JsonWriter(response.BodyWriter))
        {
            json.WriteStartObject();
            foreach (var result in results)
            {
                if (result.Json is { } bytes)
                {
                    json.WritePropertyName(result.Leg.Name);
                    json.WriteRawValue(bytes, skipInputValidation: true);
                }
            }

            if (failed.Length > 0)
            {
                json.WriteBoolean("partial", true);
                json.WriteStartArray("failed");
                foreach (var name in failed)
                {
                    json.WriteStringValue(name);
                }

                json.WriteEndArray();
            }

            json.WriteEndObject();
        }

        await response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    private async Task<LegResult> RunLegAsync(HttpContext context, AggregateClient client, AggregateLeg leg, byte[]? body)
    {
        var started = Stopwatch.GetTimestamp();
        using var activity = GatewayTelemetry.Source.StartActivity("gateway.aggregate.leg " + leg.Name, ActivityKind.Client);
        using var timeout = new CancellationTokenSource(leg.Options.Timeout, client.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, context.RequestAborted);
        try
        {
            var baseAddress = ResolveTarget(context, leg.Target);
            using var request = new HttpRequestMessage(
                new HttpMethod(leg.Options.Method ?? context.Request.Method),
                new Uri(baseAddress.TrimEnd('/') + Expand(leg.Path, context.Request.RouteValues) + context.Request.QueryString.Value, UriKind.Absolute));
            foreach (var name in definition.Headers)
            {
                if (context.Request.Headers.TryGetValue(name, out var values))
                {
                    request.Headers.TryAddWithoutValidation(name, (IEnumerable<string?>)values);
                }
            }

            if (leg.Options.ForwardBody && body is not null)
            {
                request.Content = new ByteArrayContent(body);
                if (context.Request.ContentType is { } contentType)
                {
                    request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
                }
            }

            using var response = await client.Invoker.SendAsync(request, linked.Token).ConfigureAwait(false);
            var bytes = await response.Content.ReadAsByteArrayAsync(linked.Token).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
            {
                return new LegResult(leg, null, false, $"answered {(int)response.StatusCode}.");
            }

            if (bytes.Length == 0)
            {
                return new LegResult(leg, "null"u8.ToArray(), false, null);
            }

            var reader = new Utf8JsonReader(bytes);
            if (!JsonDocument.TryParseValue(ref reader, out var document))
            {
                return new LegResult(leg, null, false, "the answer is not JSON.");
            }

            document.Dispose();
            return new LegResult(leg, bytes, false, null);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !context.RequestAborted.IsCancellationRequested)
        {
            return new LegResult(leg, null, true, $"no answer within {leg.Options.Timeout}.");
        }
        catch (Exception ex) when (ex is HttpRequestException or JsonException or InvalidOperationException)
        {
            return new LegResult(leg, null, false, ex.Message);
        }
        finally
        {
            GatewayTelemetry.LegDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, new KeyValuePair<string, object?>(GatewayTelemetry.RouteTag, pattern));
        }
    }

    private static string ResolveTarget(HttpContext context, string target)
    {
        if (target.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || target.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
        {
            return target;
        }

        var lookup = context.RequestServices.GetRequiredService<IProxyStateLookup>();
        if (!lookup.TryGetCluster(target, out var cluster))
        {
            throw new InvalidOperationException($"The cluster '{target}' is not configured (routes and clusters load when app.MapGateway() is called).");
        }

        var destination = context.RequestServices.GetRequiredService<WeightedLoadBalancingPolicy>()
            .Pick(context, cluster, cluster.DestinationsState.AvailableDestinations, exclude: null)
            ?? throw new InvalidOperationException($"The cluster '{target}' has no available destination.");
        return destination.Model.Config.Address;
    }

    private static string Expand(string path, RouteValueDictionary values)
    {
        if (!path.Contains('{', StringComparison.Ordinal))
        {
            return path.StartsWith('/') ? path : "/" + path;
        }

        var result = new StringBuilder(path.Length + 16);
        var i = 0;
        while (i < path.Length)
        {
            var open = path.IndexOf('{', i);
            if (open < 0)
            {
                result.Append(path, i, path.Length - i);
                break;
            }

            var close = path.IndexOf('}', open);
            if (close < 0)
            {
                result.Append(path, i, path.Length - i);
                break;
            }

            result.Append(path, i, open - i);
            var name = path[(open + 1)..close];
            result.Append(Uri.EscapeDataString(values.TryGetValue(name, out var value) ? Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? string.Empty : string.Empty));
            i = close + 1;
        }

        var text = result.ToString();
        return text.StartsWith('/') ? text : "/" + text;
    }

    private sealed record LegResult(AggregateLeg Leg, byte[]? Json, bool TimedOut, string? Error);
}

/// <summary>The HTTP client shared by every aggregate leg.</summary>
internal sealed class AggregateClient(TimeProvider timeProvider) : IDisposable
{
    public HttpMessageInvoker Invoker { get; } = new(new SocketsHttpHandler
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        UseCookies = false,
        AutomaticDecompression = System.Net.DecompressionMethods.None,
        ActivityHeadersPropagator = DistributedContextPropagator.CreateDefaultPropagator(),
    });

    public TimeProvider Time => timeProvider;

    public void Dispose() => Invoker.Dispose();
}
