using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using Microsoft.Extensions.DependencyInjection;

namespace Patterns.Orchestration.Activities;

/// <summary>An activity: its name, input type and how to invoke it.</summary>
internal sealed record ActivityDefinition(string Name, Type? InputType, Type ResultType, Func<IServiceProvider, object?, ActivityContext, Task<object?>> Invoke);

/// <summary>Builds activity definitions from delegates and from the public methods of a class.</summary>
internal static class ActivityRegistry
{
    public static ActivityDefinition FromDelegate<TInput, TResult>(string name, Func<TInput, ActivityContext, Task<TResult>> body) =>
        new(name, typeof(TInput), typeof(TResult), async (_, input, context) => await body(input is null ? default! : (TInput)input, context).ConfigureAwait(false));

    public static ActivityDefinition FromMethod<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TActivities, TInput, TResult>(
        string name, Func<TActivities, TInput, ActivityContext, Task<TResult>> body)
        where TActivities : class
    {
        var create = ActivatorUtilities.CreateFactory<TActivities>([]);
        var inputType = typeof(TInput) == typeof(object) ? null : typeof(TInput);
        return new(name, inputType, typeof(TResult), async (services, input, context) =>
        {
            var target = services.GetService<TActivities>() ?? create(services, null);
            return await body(target, input is null ? default! : (TInput)input, context).ConfigureAwait(false);
        });
    }

    [RequiresUnreferencedCode("Activities found by reflection need their methods kept; register them with AddActivity for trimmed apps.")]
    [RequiresDynamicCode("Activities found by reflection read Task<T>.Result by reflection; register them with AddActivity for native AOT.")]
    public static IEnumerable<ActivityDefinition> FromType([DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicMethods | DynamicallyAccessedMemberTypes.PublicConstructors)] Type type)
    {
        foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly))
        {
            if (!typeof(Task).IsAssignableFrom(method.ReturnType) && method.ReturnType != typeof(ValueTask)
                && !(method.ReturnType.IsGenericType && method.ReturnType.GetGenericTypeDefinition() == typeof(ValueTask<>)))
            {
                continue;
            }

            var parameters = method.GetParameters();
            var input = parameters.FirstOrDefault(p => p.ParameterType != typeof(ActivityContext) && p.ParameterType != typeof(CancellationToken));
            if (parameters.Count(p => p.ParameterType != typeof(ActivityContext) && p.ParameterType != typeof(CancellationToken)) > 1)
            {
                throw new InvalidOperationException($"Activity method {type.Name}.{method.Name} takes more than one input; pass one record instead.");
            }

            var name = method.Name.EndsWith("Async", StringComparison.Ordinal) ? method.Name[..^5] : method.Name;
            var resultType = method.ReturnType.IsGenericType ? method.ReturnType.GetGenericArguments()[0] : typeof(object);
            yield return new ActivityDefinition(name, input?.ParameterType, resultType, async (services, value, context) =>
            {
                var target = ActivatorUtilities.GetServiceOrCreateInstance(services, type);
                var arguments = new object?[parameters.Length];
                for (var i = 0; i < parameters.Length; i++)
                {
                    var p = parameters[i].ParameterType;
                    arguments[i] = p == typeof(ActivityContext) ? context : p == typeof(CancellationToken) ? context.CancellationToken : value;
                }

                object? returned;
                try
                {
                    returned = method.Invoke(target, arguments);
                }
                catch (TargetInvocationException ex) when (ex.InnerException is not null)
                {
                    throw ex.InnerException;
                }

                var task = returned switch
                {
                    Task t => t,
                    ValueTask vt => vt.AsTask(),
                    _ => (Task)returned!.GetType().GetMethod(nameof(ValueTask<int>.AsTask))!.Invoke(returned, null)!,
                };
                await task.ConfigureAwait(false);
                return task.GetType().IsGenericType && task.GetType().GetGenericArguments()[0] != typeof(void) && method.ReturnType.IsGenericType
                    ? task.GetType().GetProperty(nameof(Task<int>.Result))!.GetValue(task)
                    : null;
            });
        }
    }
}
