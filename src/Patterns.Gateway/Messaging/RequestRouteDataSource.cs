using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Gateway.Configuration;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;

namespace Patterns.Gateway.Messaging;

/// <summary>
/// The endpoints of the request routes declared in configuration (the <c>Requests</c> section): HTTP routes that call a
/// request handler, publish or send, built and reloaded as <see cref="ConfigRouteDataSource"/> describes.
/// </summary>
internal sealed class RequestRouteDataSource : ConfigRouteDataSource
{
    private static readonly string[] Fields = ["Path", "Request", "Publish", "Topic", "Send", "Queue", "Timeout", "MaxBodyBytes", "AuthorizationPolicy", "RateLimiterPolicy", "Order"];

    private readonly IReadOnlyDictionary<string, RequestTarget> _targets;
    private readonly IReadOnlyDictionary<string, MessageTarget> _messages;
    private readonly IServiceProviderIsService? _isService;

    public RequestRouteDataSource(IConfiguration section, IServiceProvider services)
        : base(section, "request route", services)
    {
        _targets = services.GetServices<RequestTarget>().GroupBy(t => t.Name, StringComparer.OrdinalIgnoreCase).ToDictionary(g => g.Key, g => g.Last(), StringComparer.OrdinalIgnoreCase);
        _messages = services.GetServices<MessageTarget>().GroupBy(t => t.Name, StringComparer.OrdinalIgnoreCase).ToDictionary(g => g.Key, g => g.Last(), StringComparer.OrdinalIgnoreCase);
        _isService = services.GetService<IServiceProviderIsService>();
        Initialize();
    }

    /// <summary>Builds one POST endpoint per configured route, adding one message per problem to <paramref name="errors"/>.</summary>
    protected override List<Endpoint> Build(List<string> errors)
    {
        var endpoints = new List<Endpoint>();
        var paths = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var route in Section.GetChildren())
        {
            var reader = new RouteReader(Kind, route, errors);
            var id = route.Key;
            var before = errors.Count;
            reader.CheckFields(Fields);
            var pattern = reader.Path(paths, "/api/quotes");
            var options = new MessageEndpointOptions();
            var create = Target(id, route, errors);
            if (reader.Duration("Timeout") is { } timeout)
            {
                options.Timeout = timeout;
            }

            if (reader.Int("MaxBodyBytes", 1, int.MaxValue) is { } max)
            {
                options.MaxBodyBytes = max;
            }

            var order = reader.Int("Order", int.MinValue, int.MaxValue) ?? 0;
            ValidatePolicies(reader);
            if (errors.Count > before || pattern is null || create is null)
            {
                continue;
            }

            endpoints.Add(Endpoint(
                create.Value.Create(pattern.RawText!, options), pattern, order, $"Gateway request route '{id}': POST {pattern.RawText} to {create.Value.What}",
                [HttpMethods.Post], route, options));
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
        if (_isService is not null && !_isService.IsService(service))
        {
            errors.Add($"Request route '{id}': no {service.Name} is registered; call {call} when building the host.");
        }
    }
}
