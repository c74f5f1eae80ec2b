using System.Globalization;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Patterns.Gateway.Telemetry;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;

namespace Patterns.Gateway.Messaging;

/// <summary>The <c>Requests</c> section given to <see cref="GatewayBuilder.LoadFromConfig"/>: HTTP routes to request handlers.</summary>
internal sealed class RequestRouteSection(IConfiguration section)
{
    public IConfiguration Section { get; } = section;
}

/// <summary>
/// The endpoints of the request routes declared in configuration. They are built when <c>MapGateway</c> runs (a bad
/// route fails the host, naming the route and the field) and rebuilt when the configuration changes (a bad change is
/// logged and the last good routes stay).
/// </summary>
internal sealed class RequestRouteDataSource : EndpointDataSource, IDisposable
{
    private static readonly string[] Fields = ["Path", "Request", "Publish", "Topic", "Send", "Queue", "Timeout", "MaxBodyBytes", "AuthorizationPolicy", "RateLimiterPolicy", "Order"];

    private readonly IConfiguration _section;
    private readonly IReadOnlyDictionary<string, RequestTarget> _targets;
    private readonly IReadOnlyDictionary<string, MessageTarget> _messages;
    private readonly IServiceProviderIsService? _services;
    private readonly ILogger _logger;
    private readonly IDisposable _reloads;
    private readonly Lock _lock = new();
    private IReadOnlyList<Endpoint> _endpoints;
    private CancellationTokenSource _changed = new();

    public RequestRouteDataSource(IConfiguration section, IEnumerable<RequestTarget> targets, IEnumerable<MessageTarget> messages, IServiceProviderIsService? services, ILogger logger)
    {
        _section = section;
        _targets = targets.GroupBy(t => t.Name, StringComparer.OrdinalIgnoreCase).ToDictionary(g => g.Key, g => g.Last(), StringComparer.OrdinalIgnoreCase);
        _messages = messages.GroupBy(t => t.Name, StringComparer.OrdinalIgnoreCase).ToDictionary(g => g.Key, g => g.Last(), StringComparer.OrdinalIgnoreCase);
        _services = services;
        _logger = logger;
        var errors = new List<string>();
        _endpoints = Build(errors);
        if (errors.Count > 0)
        {
            throw new InvalidOperationException("Invalid gateway request routes: " + string.Join(" ", errors));
        }

        _reloads = ChangeToken.OnChange(_section.GetReloadToken, Reload);
    }

    public override IReadOnlyList<Endpoint> Endpoints => Volatile.Read(ref _endpoints);

    public override IChangeToken GetChangeToken()
    {
        lock (_lock)
        {
            return new CancellationChangeToken(_changed.Token);
        }
    }

    public void Dispose()
    {
        _reloads.Dispose();
        _changed.Dispose();
    }

    private void Reload()
    {
        var errors = new List<string>();
        var endpoints = Build(errors);
        if (errors.Count > 0)
        {
            GatewayLog.RequestRoutesRejected(_logger, string.Join(" ", errors));
            return;
        }

        CancellationTokenSource previous;
        lock (_lock)
        {
            Volatile.Write(ref _endpoints, endpoints);
            previous = _changed;
            _changed = new CancellationTokenSource();
        }

        previous.Cancel();
        previous.Dispose();
    }

    /// <summary>Builds one POST endpoint per configured route, adding one message per problem to <paramref name="errors"/>.</summary>
    private List<Endpoint> Build(List<string> errors)
    {
        var endpoints = new List<Endpoint>();
        var paths = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var route in _section.GetChildren())
        {
            var id = route.Key;
            var before = errors.Count;
            foreach (var field in route.GetChildren())
            {
                if (!Fields.Contains(field.Key, StringComparer.OrdinalIgnoreCase))
                {
                    errors.Add($"Request route '{id}': unknown field '{field.Key}'; the fields are {string.Join(", ", Fields)}.");
                }
            }

            RoutePattern? pattern = null;
            var path = route["Path"];
            if (string.IsNullOrWhiteSpace(path))
            {
                errors.Add($"Request route '{id}': 'Path' is missing; give the route pattern, for example '/api/quotes'.");
            }
            else
            {
                try
                {
                    pattern = RoutePatternFactory.Parse(path);
                    if (!paths.TryAdd(pattern.RawText ?? path, id))
                    {
                        errors.Add($"Request route '{id}': 'Path' '{path}' is also the path of request route '{paths[pattern.RawText ?? path]}'.");
                    }
                }
                catch (RoutePatternException ex)
                {
                    errors.Add($"Request route '{id}': 'Path' '{path}' is not a valid route pattern: {ex.Message}");
                }
            }

            var options = new MessageEndpointOptions();
            var create = Target(id, route, errors);
            if (route["Timeout"] is { } timeoutText)
            {
                if (TimeSpan.TryParse(timeoutText, CultureInfo.InvariantCulture, out var timeout) && timeout > TimeSpan.Zero)
                {
                    options.Timeout = timeout;
                }
                else
                {
                    errors.Add($"Request route '{id}': 'Timeout' is '{timeoutText}'; it must be a positive duration such as 00:00:05.");
                }
            }

            if (route["MaxBodyBytes"] is { } maxText)
            {
                if (int.TryParse(maxText, NumberStyles.Integer, CultureInfo.InvariantCulture, out var max) && max > 0)
                {
                    options.MaxBodyBytes = max;
                }
                else
                {
                    errors.Add($"Request route '{id}': 'MaxBodyBytes' is '{maxText}'; it must be a whole number from 1 to {int.MaxValue}.");
                }
            }

            var order = 0;
            if (route["Order"] is { } orderText && !int.TryParse(orderText, NumberStyles.Integer, CultureInfo.InvariantCulture, out order))
            {
                errors.Add($"Request route '{id}': 'Order' is '{orderText}'; it must be a whole number.");
            }

            if (errors.Count > before || pattern is null || create is null)
            {
                continue;
            }

            var builder = new RouteEndpointBuilder(create.Value.Create(pattern.RawText ?? path!, options), pattern, order)
            {
                DisplayName = $"Gateway request route '{id}': POST {pattern.RawText} to {create.Value.What}",
            };
            builder.Metadata.Add(new HttpMethodMetadata([HttpMethods.Post]));
            builder.Metadata.Add(options);
            AddPolicies(builder, route["AuthorizationPolicy"], route["RateLimiterPolicy"]);
            endpoints.Add(builder.Build());
        }

        return endpoints;
    }

    /// <summary>What a route calls: exactly one of <c>Request</c>, <c>Publish</c> (with an optional <c>Topic</c>) or <c>Send</c> (with a <c>Queue</c>).</summary>
    private (Func<string, MessageEndpointOptions, RequestDelegate> Create, string What)? Target(string id, IConfigurationSection route, List<string> errors)
    {
        string? request = route["Request"], publish = route["Publish"], send = route["Send"], topic = route["Topic"], queue = route["Queue"];
        var kinds = (request is null ? 0 : 1) + (publish is null ? 0 : 1) + (send is null ? 0 : 1);
        if (kinds != 1)
        {
            errors.Add($"Request route '{id}': give exactly one of 'Request' (a request type, answered with its response), 'Publish' (a message type, published) or 'Send' (a message type, sent to 'Queue'); it has {kinds}.");
            return null;
        }

        if (topic is not null && publish is null)
        {
            errors.Add($"Request route '{id}': 'Topic' applies to a 'Publish' route only.");
        }

        if (queue is not null && send is null)
        {
            errors.Add($"Request route '{id}': 'Queue' applies to a 'Send' route only.");
        }

        if (request is not null)
        {
            if (!_targets.TryGetValue(request, out var target))
            {
                errors.Add($"Request route '{id}': 'Request' is '{request}', which is not a request type the gateway knows ({Known(_targets.Keys)}); register it with AddRequestType<TRequest, TResponse>().");
                return null;
            }

            Require(id, typeof(IRequestClient), "AddRequestResponse()", errors);
            return ((r, o) => target.CreateDelegate(r, o), "request " + target.Name);
        }

        var name = publish ?? send!;
        var field = publish is not null ? "Publish" : "Send";
        if (!_messages.TryGetValue(name, out var message))
        {
            errors.Add($"Request route '{id}': '{field}' is '{name}', which is not a message type the gateway knows ({Known(_messages.Keys)}); register it with AddMessageType<TMessage>().");
            return null;
        }

        if (publish is not null)
        {
            if (topic is { Length: 0 })
            {
                errors.Add($"Request route '{id}': 'Topic' is empty; leave it out to publish by the message type's name.");
            }

            Require(id, typeof(IPublisher), "AddPatterns(...) with a transport", errors);
            return ((r, o) => message.CreatePublish(r, topic, o), "publish " + message.Name + (topic is null ? string.Empty : " on " + topic));
        }

        if (string.IsNullOrWhiteSpace(queue))
        {
            errors.Add($"Request route '{id}': 'Queue' is missing; a 'Send' route names the queue it sends to.");
            return null;
        }

        Require(id, typeof(IQueueSender), "AddPatterns(...) with a transport", errors);
        return ((r, o) => message.CreateSend(r, queue, o), "send " + message.Name + " to " + queue);
    }

    private static string Known(IEnumerable<string> names) =>
        names.Any() ? "registered: " + string.Join(", ", names.Order(StringComparer.OrdinalIgnoreCase)) : "none is registered";

    private void Require(string id, Type service, string call, List<string> errors)
    {
        if (_services is not null && !_services.IsService(service))
        {
            errors.Add($"Request route '{id}': no {service.Name} is registered; call {call} when building the host.");
        }
    }

    /// <summary>YARP's conventions: <c>Default</c> and <c>Anonymous</c> authorization, <c>Default</c> and <c>Disable</c> rate limiting, else a named policy.</summary>
    private static void AddPolicies(RouteEndpointBuilder builder, string? authorization, string? rateLimiter)
    {
        if (!string.IsNullOrEmpty(authorization))
        {
            builder.Metadata.Add(
                string.Equals(authorization, "Anonymous", StringComparison.OrdinalIgnoreCase) ? new AllowAnonymousAttribute()
                : string.Equals(authorization, "Default", StringComparison.OrdinalIgnoreCase) ? new AuthorizeAttribute()
                : new AuthorizeAttribute(authorization));
        }

        if (!string.IsNullOrEmpty(rateLimiter) && !string.Equals(rateLimiter, "Default", StringComparison.OrdinalIgnoreCase))
        {
            builder.Metadata.Add(
                string.Equals(rateLimiter, "Disable", StringComparison.OrdinalIgnoreCase) ? new DisableRateLimitingAttribute() : new EnableRateLimitingAttribute(rateLimiter));
        }
    }
}
